//! `weft sample` flags: defaults, and that bad values are refused with a message that says
//! what was expected.

mod common;

use std::time::Duration;

use clap::{Parser, Subcommand};
use common::Cli;
use weft_samples::{ReviewsVersion, SampleArgs, SampleError, Service};

fn parse(argv: &[&str]) -> Result<SampleArgs, String> {
    Cli::try_parse_from(["sample"].iter().chain(argv)).map(|c| c.args).map_err(|e| e.to_string())
}

fn refused(argv: &[&str]) -> String {
    match parse(argv) {
        Ok(args) => panic!("{argv:?} was accepted: {args:?}"),
        Err(e) => e,
    }
}

#[test]
fn defaults() {
    let args = parse(&["productpage"]).unwrap();
    assert_eq!(args.service, Service::Productpage);
    assert_eq!(args.listen, "0.0.0.0:9080".parse().unwrap());
    assert_eq!(args.details_url.to_string(), "http://details:9080");
    assert_eq!(args.reviews_url.to_string(), "http://reviews:9080");
    assert_eq!(args.ratings_url.to_string(), "http://ratings:9080");
    assert_eq!(args.timeout, Duration::from_secs(3));
    if std::env::var_os("SAMPLE_VERSION").is_none() {
        assert_eq!(args.version, ReviewsVersion::V1);
    }
}

#[test]
fn every_flag() {
    let args = parse(&[
        "reviews",
        "--listen",
        "127.0.0.1:9081",
        "--version",
        "v3",
        "--details-url",
        "http://d:1",
        "--reviews-url",
        "http://r:2/",
        "--ratings-url",
        "http://10.0.0.1:3",
        "--timeout",
        "1m500ms",
        "--pod-name",
        "reviews-v3-abc",
    ])
    .unwrap();
    assert_eq!(args.service, Service::Reviews);
    assert_eq!(args.listen, "127.0.0.1:9081".parse().unwrap());
    assert_eq!(args.version, ReviewsVersion::V3);
    assert_eq!(args.details_url.to_string(), "http://d:1");
    assert_eq!(args.reviews_url.to_string(), "http://r:2");
    assert_eq!(args.ratings_url.to_string(), "http://10.0.0.1:3");
    assert_eq!(args.timeout, Duration::from_millis(60_500));
    assert_eq!(args.pod_name.as_deref(), Some("reviews-v3-abc"));
}

#[test]
fn bad_listen_is_refused() {
    for bad in ["nope", "9080", "localhost:9080", "1.2.3.4:99999"] {
        let e = refused(&["details", "--listen", bad]);
        assert!(e.contains("--listen") && e.contains("expected IP:PORT"), "{bad}: {e}");
    }
}

#[test]
fn bad_timeout_is_refused() {
    for bad in ["3", "abc", "-1s", "3 s", "1x"] {
        let e = refused(&["details", &format!("--timeout={bad}")]);
        assert!(e.contains("--timeout") && e.contains("invalid duration") && e.contains("\"500ms\""), "{bad}: {e}");
    }
    let e = refused(&["details", "--timeout", "0s"]);
    assert!(e.contains("must be greater than zero"), "{e}");
}

#[test]
fn bad_service_version_and_urls_are_refused() {
    let e = refused(&["frontend"]);
    assert!(e.contains("productpage") && e.contains("ratings"), "lists the services: {e}");
    let e = refused(&["reviews", "--version", "v4"]);
    assert!(e.contains("--version") && e.contains("v1, v2, v3"), "{e}");
    let e = refused(&["productpage", "--details-url", "https://details:9080"]);
    assert!(e.contains("--details-url") && e.contains("plain http://"), "{e}");
    let e = refused(&["productpage", "--reviews-url", "reviews:9080"]);
    assert!(e.contains("--reviews-url") && e.contains("missing scheme"), "{e}");
    let e = refused(&[]);
    assert!(e.contains("<SERVICE>"), "{e}");
}

/// Under a parent command that has clap's own `--version` (as `weft` does), `weft sample
/// reviews --version v2` still means the reviews version.
#[test]
fn version_flag_works_under_a_versioned_parent() {
    #[derive(Parser)]
    #[command(name = "weft", version)]
    struct Weft {
        #[command(subcommand)]
        command: Command,
    }
    #[derive(Subcommand)]
    enum Command {
        Sample(SampleArgs),
    }
    let Weft { command: Command::Sample(args) } = Weft::try_parse_from(["weft", "sample", "reviews", "--version", "v2"]).unwrap();
    assert_eq!(args.service, Service::Reviews);
    assert_eq!(args.version, ReviewsVersion::V2);
}

#[test]
fn run_reports_a_busy_port() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let args = parse(&["details", "--listen", &addr]).unwrap();
    let e = weft_samples::run(args).unwrap_err();
    assert!(matches!(e, SampleError::Bind { .. }), "{e:?}");
    assert!(e.to_string().contains(&addr) && e.to_string().contains("--listen"), "{e}");
}
