//! Envoy's HTTP/2 flood limits, which the h2 library under hyper does not have: a peer that
//! makes the proxy owe it control frames it never reads (SETTINGS and PING floods), or sends
//! frames that cost work and carry nothing (empty DATA/HEADERS/CONTINUATION, PRIORITY, and
//! WINDOW_UPDATE floods), has its connection ended, as Envoy ends it.
//!
//! h2 itself stops reading while it cannot write a pending acknowledgement, so those floods
//! never cost it memory; but they hold a connection (and the client's bytes in the kernel)
//! for as long as the client likes. Envoy reads on and closes the connection once more than
//! `max_outbound_control_frames` wait to be written. weft counts the same thing from the
//! bytes: frames read that demand an acknowledgement, less acknowledgements written.
//!
//! [`H2Floods`] follows frame boundaries in both directions from 9-byte frame headers; it
//! never looks inside a payload.

/// The limits, from `http2_protocol_options` (Envoy's defaults in `Default`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodLimits {
    pub max_outbound_control_frames: u64,
    pub max_consecutive_inbound_frames_with_empty_payload: u64,
    pub max_inbound_priority_frames_per_stream: u64,
    pub max_inbound_window_update_frames_per_data_frame_sent: u64,
}

impl Default for FloodLimits {
    fn default() -> Self {
        FloodLimits {
            max_outbound_control_frames: 1000,
            max_consecutive_inbound_frames_with_empty_payload: 1,
            max_inbound_priority_frames_per_stream: 100,
            max_inbound_window_update_frames_per_data_frame_sent: 10,
        }
    }
}

/// Which limit a connection broke, named by the counter Envoy keeps for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    OutboundControl,
    /// SETTINGS frames not acknowledged: Envoy's HTTP/2 library refuses a peer that leaves
    /// more than 1000 of its own acknowledgements unread, before Envoy's counters see it.
    SettingsAcks,
    InboundEmptyFrames,
    InboundPriorityFrames,
    InboundWindowUpdateFrames,
}

impl Flood {
    pub fn code(self) -> u8 {
        match self {
            Flood::OutboundControl => 1,
            Flood::InboundEmptyFrames => 2,
            Flood::InboundPriorityFrames => 3,
            Flood::InboundWindowUpdateFrames => 4,
            Flood::SettingsAcks => 5,
        }
    }

    pub fn from_code(c: u8) -> Option<Flood> {
        match c {
            1 => Some(Flood::OutboundControl),
            2 => Some(Flood::InboundEmptyFrames),
            3 => Some(Flood::InboundPriorityFrames),
            4 => Some(Flood::InboundWindowUpdateFrames),
            5 => Some(Flood::SettingsAcks),
            _ => None,
        }
    }
}

/// nghttp2's default bound on acknowledgements a peer leaves unread (Envoy inherits it).
const MAX_UNREAD_SETTINGS_ACKS: u64 = 1000;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;

/// A frame header, as far as the counts care.
#[derive(Debug, Clone, Copy)]
struct Head {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

/// Frame boundaries in one direction of a connection.
#[derive(Debug, Clone, Default)]
struct Frames {
    head: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
}

impl Frames {
    /// Calls `on_head` for every frame header completed in `data`.
    fn feed(&mut self, mut data: &[u8], mut on_head: impl FnMut(Head)) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (9 - self.have).min(data.len());
            self.head[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 9 {
                self.have = 0;
                let h = &self.head;
                let len = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                self.skip = len;
                on_head(Head { len, kind: h[3], flags: h[4], stream });
            }
        }
    }
}

/// Both directions of one HTTP/2 connection, counted against [`FloodLimits`].
#[derive(Debug, Clone)]
pub struct H2Floods {
    limits: FloodLimits,
    inbound: Frames,
    outbound: Frames,
    /// PING frames read that want an acknowledgement, and acknowledgements written.
    pings_owed: u64,
    pings_paid: u64,
    /// The same for SETTINGS.
    settings_owed: u64,
    settings_paid: u64,
    consecutive_empty: u64,
    priority: u64,
    window_updates: u64,
    opened_streams: u64,
    last_stream: u32,
    outbound_data: u64,
}

impl H2Floods {
    pub fn new(limits: FloodLimits) -> H2Floods {
        H2Floods {
            limits,
            inbound: Frames::default(),
            outbound: Frames::default(),
            pings_owed: 0,
            pings_paid: 0,
            settings_owed: 0,
            settings_paid: 0,
            consecutive_empty: 0,
            priority: 0,
            window_updates: 0,
            opened_streams: 0,
            last_stream: 0,
            outbound_data: 0,
        }
    }

    /// Counts bytes read from the peer (after the connection preface); the first limit broken.
    pub fn read(&mut self, data: &[u8]) -> Option<Flood> {
        let mut broken = None;
        let mut frames = std::mem::take(&mut self.inbound);
        frames.feed(data, |h| {
            if broken.is_none() {
                broken = self.inbound_frame(h);
            }
        });
        self.inbound = frames;
        broken
    }

    /// Counts bytes the proxy wrote to the peer.
    pub fn wrote(&mut self, data: &[u8]) {
        let mut frames = std::mem::take(&mut self.outbound);
        frames.feed(data, |h| match h.kind {
            SETTINGS if h.flags & ACK != 0 => self.settings_paid += 1,
            PING if h.flags & ACK != 0 => self.pings_paid += 1,
            DATA => self.outbound_data += 1,
            _ => {}
        });
        self.outbound = frames;
    }

    fn inbound_frame(&mut self, h: Head) -> Option<Flood> {
        let l = self.limits;
        let empty = h.len == 0 && matches!(h.kind, DATA | HEADERS | CONTINUATION) && h.flags & END_STREAM == 0;
        self.consecutive_empty = if empty { self.consecutive_empty + 1 } else { 0 };
        if self.consecutive_empty > l.max_consecutive_inbound_frames_with_empty_payload {
            return Some(Flood::InboundEmptyFrames);
        }
        match h.kind {
            HEADERS if h.stream > self.last_stream && h.stream % 2 == 1 => {
                self.last_stream = h.stream;
                self.opened_streams += 1;
            }
            PING if h.flags & ACK == 0 => {
                self.pings_owed += 1;
                if self.pings_owed.saturating_sub(self.pings_paid) > l.max_outbound_control_frames {
                    return Some(Flood::OutboundControl);
                }
            }
            SETTINGS if h.flags & ACK == 0 => {
                self.settings_owed += 1;
                if self.settings_owed.saturating_sub(self.settings_paid) > MAX_UNREAD_SETTINGS_ACKS {
                    return Some(Flood::SettingsAcks);
                }
            }
            PRIORITY => {
                self.priority += 1;
                if self.priority > l.max_inbound_priority_frames_per_stream * (1 + self.opened_streams) {
                    return Some(Flood::InboundPriorityFrames);
                }
            }
            WINDOW_UPDATE => {
                self.window_updates += 1;
                let allowed = 5 + 2 * (self.opened_streams + l.max_inbound_window_update_frames_per_data_frame_sent * self.outbound_data);
                if self.window_updates > allowed {
                    return Some(Flood::InboundWindowUpdateFrames);
                }
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn flood_of(frames: impl Iterator<Item = Vec<u8>>) -> Option<Flood> {
        let mut f = H2Floods::new(FloodLimits::default());
        let bytes: Vec<u8> = frames.flatten().collect();
        // One byte at a time, so every header meets a read boundary.
        bytes.iter().find_map(|b| f.read(std::slice::from_ref(b)))
    }

    #[test]
    fn unacknowledged_control_frames_past_the_limit_are_a_flood() {
        assert_eq!(flood_of((0..1001).map(|_| frame(SETTINGS, 0, 0, &[]))), Some(Flood::SettingsAcks));
        assert_eq!(flood_of((0..1001).map(|i: u64| frame(PING, 0, 0, &i.to_be_bytes()))), Some(Flood::OutboundControl));
        assert_eq!(flood_of((0..1000).map(|i: u64| frame(PING, 0, 0, &i.to_be_bytes()))), None);
        // Acknowledgements written pay the debt.
        let mut f = H2Floods::new(FloodLimits::default());
        for _ in 0..5000 {
            assert_eq!(f.read(&frame(PING, 0, 0, &[0; 8])), None);
            f.wrote(&frame(PING, ACK, 0, &[0; 8]));
        }
    }

    #[test]
    fn empty_priority_and_window_update_floods() {
        let open = frame(HEADERS, 4, 1, b"\x82");
        assert_eq!(flood_of([open.clone()].into_iter().chain((0..2).map(|_| frame(DATA, 0, 1, &[])))), Some(Flood::InboundEmptyFrames));
        // One empty frame, or an empty one that ends the stream, is allowed.
        assert_eq!(flood_of([open.clone(), frame(DATA, 0, 1, &[]), frame(DATA, 0, 1, b"x"), frame(DATA, 0, 1, &[])].into_iter()), None);
        assert_eq!(flood_of([open.clone(), frame(DATA, 0, 1, &[]), frame(DATA, END_STREAM, 1, &[])].into_iter()), None);
        assert_eq!(flood_of((0..101).map(|_| frame(PRIORITY, 0, 3, &[0, 0, 0, 1, 16]))), Some(Flood::InboundPriorityFrames));
        assert_eq!(flood_of([open.clone()].into_iter().chain((0..200).map(|_| frame(PRIORITY, 0, 3, &[0, 0, 0, 1, 16])))), None);
        assert_eq!(flood_of((0..6).map(|_| frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]))), Some(Flood::InboundWindowUpdateFrames));
    }
}
