//! Writes (or checks) the Envoy descriptor set weft compiles in: `crates/xds/descriptors/envoy.binpb`.
//!
//! Input is the full descriptor set that `envoy-types` ships with its prost types
//! (`src/generated/types.bin`; `scripts/descriptors.sh` finds it). Output keeps only what proto3
//! JSON reflection over the resources weft reads and writes needs: the messages and enums
//! reachable from `weft_xds::proto::descriptor_roots()`, without comments, services, extensions
//! or options other than `map_entry` and `packed`. That is the whole of what the reflection pool
//! holds in memory, so keeping it small keeps an ADS-fed sidecar small.
//!
//! ```sh
//! cargo run -p weft-xds --example descriptors -- FULL.bin OUT.binpb          # write
//! cargo run -p weft-xds --example descriptors -- --check FULL.bin OUT.binpb  # exit 1 if stale
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use prost::Message;
use prost_reflect::prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldOptions, FileDescriptorProto, FileDescriptorSet, MessageOptions,
};
use prost_reflect::DescriptorPool;

/// Where a type is declared: its file, and the chain of names from the file down (the last
/// may name an enum, for which no message is found).
#[derive(Clone)]
struct Place {
    file: usize,
    path: Vec<String>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (check, rest) = match args.first().map(String::as_str) {
        Some("--check") => (true, &args[1..]),
        _ => (false, &args[..]),
    };
    let [full, out] = rest else {
        eprintln!("usage: descriptors [--check] FULL_DESCRIPTOR_SET OUT_FILE");
        return ExitCode::from(2);
    };
    match run(check, full, out) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("descriptors: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(check: bool, full: &str, out: &str) -> Result<ExitCode, String> {
    let bytes = std::fs::read(full).map_err(|e| format!("{full}: {e}"))?;
    let set = FileDescriptorSet::decode(bytes.as_slice()).map_err(|e| format!("{full}: {e}"))?;
    let trimmed = trim(&set, &weft_xds::proto::descriptor_roots())?;
    let encoded = trimmed.encode_to_vec();
    // The output must stand on its own as a pool, and hold every root.
    let pool = DescriptorPool::decode(encoded.as_slice()).map_err(|e| format!("trimmed set does not decode: {e}"))?;
    for root in weft_xds::proto::descriptor_roots() {
        if pool.get_message_by_name(root).is_none() {
            return Err(format!("trimmed set lacks {root}"));
        }
    }
    if check {
        let current = std::fs::read(out).map_err(|e| format!("{out}: {e}"))?;
        if current != encoded {
            eprintln!("{out} is stale: run scripts/descriptors.sh and commit the result");
            return Ok(ExitCode::FAILURE);
        }
        println!("{out} is current ({} bytes, {} messages)", encoded.len(), pool.all_messages().len());
    } else {
        std::fs::write(out, &encoded).map_err(|e| format!("{out}: {e}"))?;
        println!("wrote {out}: {} bytes, {} files, {} messages", encoded.len(), trimmed.file.len(), pool.all_messages().len());
    }
    Ok(ExitCode::SUCCESS)
}

fn trim(set: &FileDescriptorSet, roots: &[&str]) -> Result<FileDescriptorSet, String> {
    let mut places = BTreeMap::new();
    for (i, f) in set.file.iter().enumerate() {
        let pkg = f.package.clone().unwrap_or_default();
        for m in &f.message_type {
            index_message(&mut places, i, &pkg, Vec::new(), m);
        }
        for e in &f.enum_type {
            places.insert(qualify(&pkg, &[], e.name()), Place { file: i, path: vec![e.name().to_string()] });
        }
    }

    // Closure: a kept message keeps its enclosing messages, its nested types and every type its
    // fields name; so the pruned files still resolve every reference.
    let mut keep: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = roots.iter().map(|r| r.to_string()).collect();
    while let Some(name) = todo.pop() {
        if !keep.insert(name.clone()) {
            continue;
        }
        let place = places.get(&name).ok_or_else(|| format!("{name} is not in the full descriptor set"))?;
        let file = &set.file[place.file];
        let pkg = file.package.clone().unwrap_or_default();
        if place.path.len() > 1 {
            todo.push(qualify(&pkg, &place.path[..place.path.len() - 2], &place.path[place.path.len() - 2]));
        }
        if let Some(msg) = find_message(file, &place.path) {
            for nested in &msg.nested_type {
                todo.push(format!("{name}.{}", nested.name()));
            }
            for e in &msg.enum_type {
                todo.push(format!("{name}.{}", e.name()));
            }
            for field in &msg.field {
                if let Some(t) = field.type_name.as_deref() {
                    todo.push(t.trim_start_matches('.').to_string());
                }
            }
        }
    }

    let mut files = Vec::new();
    for f in &set.file {
        let pkg = f.package.clone().unwrap_or_default();
        let messages: Vec<DescriptorProto> =
            f.message_type.iter().filter(|m| keep.contains(&qualify(&pkg, &[], m.name()))).map(|m| strip_message(&pkg, m, &keep)).collect();
        let enums: Vec<EnumDescriptorProto> =
            f.enum_type.iter().filter(|e| keep.contains(&qualify(&pkg, &[], e.name()))).map(strip_enum).collect();
        if messages.is_empty() && enums.is_empty() {
            continue;
        }
        let mut deps = BTreeSet::new();
        for m in &messages {
            referenced_files(m, &places, set, &mut deps);
        }
        deps.remove(f.name());
        files.push(FileDescriptorProto {
            name: f.name.clone(),
            package: f.package.clone(),
            dependency: deps.into_iter().collect(),
            message_type: messages,
            enum_type: enums,
            syntax: f.syntax.clone(),
            ..Default::default()
        });
    }
    Ok(FileDescriptorSet { file: files })
}

fn qualify(pkg: &str, outer: &[String], name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if !pkg.is_empty() {
        parts.push(pkg);
    }
    parts.extend(outer.iter().map(String::as_str));
    parts.push(name);
    parts.join(".")
}

fn index_message(places: &mut BTreeMap<String, Place>, file: usize, pkg: &str, outer: Vec<String>, m: &DescriptorProto) {
    let mut path = outer.clone();
    path.push(m.name().to_string());
    places.insert(qualify(pkg, &outer, m.name()), Place { file, path: path.clone() });
    for e in &m.enum_type {
        let mut ep = path.clone();
        ep.push(e.name().to_string());
        places.insert(qualify(pkg, &path, e.name()), Place { file, path: ep });
    }
    for n in &m.nested_type {
        index_message(places, file, pkg, path.clone(), n);
    }
}

fn find_message<'a>(file: &'a FileDescriptorProto, path: &[String]) -> Option<&'a DescriptorProto> {
    let (first, rest) = path.split_first()?;
    let mut msg = file.message_type.iter().find(|m| m.name() == first)?;
    for name in rest {
        msg = msg.nested_type.iter().find(|m| m.name() == name)?;
    }
    Some(msg)
}

/// A kept message without comments or options, with only kept nested types (all of them are
/// kept by the closure, but filtering keeps the rule in one place).
fn strip_message(scope: &str, m: &DescriptorProto, keep: &BTreeSet<String>) -> DescriptorProto {
    let name = if scope.is_empty() { m.name().to_string() } else { format!("{scope}.{}", m.name()) };
    DescriptorProto {
        name: m.name.clone(),
        field: m
            .field
            .iter()
            .map(|f| {
                let mut f = f.clone();
                f.options =
                    f.options.as_ref().and_then(|o| o.packed.map(|packed| FieldOptions { packed: Some(packed), ..Default::default() }));
                f
            })
            .collect(),
        nested_type: m
            .nested_type
            .iter()
            .filter(|n| keep.contains(&format!("{name}.{}", n.name())))
            .map(|n| strip_message(&name, n, keep))
            .collect(),
        enum_type: m.enum_type.iter().filter(|e| keep.contains(&format!("{name}.{}", e.name()))).map(strip_enum).collect(),
        oneof_decl: m
            .oneof_decl
            .iter()
            .map(|o| prost_reflect::prost_types::OneofDescriptorProto { name: o.name.clone(), options: None })
            .collect(),
        options: m
            .options
            .as_ref()
            .and_then(|o| o.map_entry.map(|map_entry| MessageOptions { map_entry: Some(map_entry), ..Default::default() })),
        reserved_range: m.reserved_range.clone(),
        reserved_name: m.reserved_name.clone(),
        ..Default::default()
    }
}

fn strip_enum(e: &EnumDescriptorProto) -> EnumDescriptorProto {
    EnumDescriptorProto {
        name: e.name.clone(),
        value: e.value.iter().map(|v| prost_reflect::prost_types::EnumValueDescriptorProto { options: None, ..v.clone() }).collect(),
        // Aliases (two names, one number) need allow_alias to pass validation.
        options: e
            .options
            .as_ref()
            .and_then(|o| o.allow_alias.map(|a| prost_reflect::prost_types::EnumOptions { allow_alias: Some(a), ..Default::default() })),
        reserved_range: e.reserved_range.clone(),
        reserved_name: e.reserved_name.clone(),
    }
}

fn referenced_files(m: &DescriptorProto, places: &BTreeMap<String, Place>, set: &FileDescriptorSet, out: &mut BTreeSet<String>) {
    for f in &m.field {
        if let Some(p) = f.type_name.as_deref().and_then(|t| places.get(t.trim_start_matches('.'))) {
            out.insert(set.file[p.file].name().to_string());
        }
    }
    for n in &m.nested_type {
        referenced_files(n, places, set, out);
    }
}
