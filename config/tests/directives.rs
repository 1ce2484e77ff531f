//! Every directive in the table: supported ones parse (from a file and, identically, from the
//! command line), ignored ones are accepted, unsupported ones are refused with file:line.

#![allow(clippy::unwrap_used)]

mod common;

use bulwark_config::*;
use common::{base_for, ccd_samples, samples, BASE};

fn show(e: &[ConfigError]) -> String {
    e.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The same text as command-line arguments: every line becomes `--name args…`.
fn as_args(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut p = split_line(line).unwrap();
        if p.is_empty() {
            continue;
        }
        p[0] = format!("--{}", p[0]);
        out.extend(p);
    }
    out
}

/// Removes locations, which differ between a file and the command line.
fn strip(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("set_at");
            m.values_mut().for_each(strip);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
        _ => {}
    }
}

fn normalized(c: &Config) -> serde_json::Value {
    let mut v = serde_json::to_value(c).unwrap();
    strip(&mut v);
    v
}

#[test]
fn every_directive_is_tested() {
    let s = samples();
    let c = ccd_samples();
    for d in directives() {
        if matches!(d.support(), Support::Supported) && !["config", "cd"].contains(&d.name) {
            assert!(
                s.contains_key(d.name) || c.contains_key(d.name),
                "no sample for {}",
                d.name
            );
        }
    }
}

#[test]
fn every_supported_directive_parses_from_file_and_command_line() {
    for (name, snippet) in samples() {
        let base = base_for(snippet);
        let text = format!("{base}{snippet}\n");
        let from_file = load_str("t.conf", &text, "/etc/openvpn")
            .unwrap_or_else(|e| panic!("{name}: {}", show(&e)));
        let mut l = Loader::new("/etc/openvpn");
        l.command_line(&as_args(&text));
        let from_cli = l
            .finish()
            .unwrap_or_else(|e| panic!("{name} (command line): {}", show(&e)));
        assert_eq!(
            normalized(&from_file.config),
            normalized(&from_cli.config),
            "{name}: file and command line differ"
        );
        // The directive must change something: either the base alone does not load (the
        // snippet supplies what it lacks), or the resulting configuration differs.
        if let Ok(reference) = load_str("t.conf", base, "/etc/openvpn") {
            assert_ne!(
                normalized(&from_file.config),
                normalized(&reference.config),
                "{name}: the directive had no effect"
            );
        }
    }
}

#[test]
fn every_ccd_directive_parses() {
    for (name, snippet) in ccd_samples() {
        let (ccd, _) = parse_ccd("ccd/c".as_ref(), snippet.as_bytes())
            .unwrap_or_else(|e| panic!("{name}: {}", show(&e)));
        assert_ne!(ccd, CcdConfig::default(), "{name}");
        // CCD-only directives are refused in the server configuration.
        let e = load_str("t.conf", &format!("{BASE}{snippet}\n"), "/").unwrap_err();
        assert_eq!(
            e[0].to_string(),
            format!("t.conf:6: option '{name}' is only valid in a client-config-dir file")
        );
    }
    // Server directives are refused in CCD files.
    let e = parse_ccd("ccd/c".as_ref(), b"verb 3\n").unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "ccd/c:1: option 'verb' cannot be used in a client-config-dir file"
    );
}

#[test]
fn ignored_directives_are_accepted() {
    for d in directives() {
        if let Support::Ignored { note } = d.support() {
            let args = vec!["x"; d.min_args].join(" ");
            let text = format!("{BASE}{} {args}\n", d.name);
            let l = load_str("t.conf", &text, "/")
                .unwrap_or_else(|e| panic!("{}: {}", d.name, show(&e)));
            if !note.is_empty() {
                assert!(
                    l.warnings.iter().any(|w| w.loc.line == 6),
                    "{}: expected a warning",
                    d.name
                );
            }
        }
    }
}

#[test]
fn unsupported_directives_are_refused_with_location() {
    let mut n = 0;
    for d in directives() {
        if let Support::Unsupported { reason } = d.support() {
            n += 1;
            let text = if d.inline {
                format!("{BASE}<{0}>\nx\n</{0}>\n", d.name)
            } else {
                format!("{BASE}{} {}\n", d.name, vec!["x"; d.min_args].join(" "))
            };
            let e = load_str("t.conf", &text, "/").unwrap_err();
            assert_eq!(e.len(), 1, "{}: {}", d.name, show(&e));
            assert_eq!(
                e[0].to_string(),
                format!(
                    "t.conf:6: option '{}' is not supported by Bulwark: {reason}",
                    d.name
                )
            );
        }
    }
    assert!(n >= 40, "{n}");
}

#[test]
fn data_threads_is_a_bounded_count_or_auto() {
    use bulwark_config::DataThreads;
    let ok = load_str("t.conf", &format!("{BASE}data-threads auto\n"), "/").unwrap();
    assert_eq!(ok.config.transport.data_threads, Some(DataThreads::Auto));
    let ok = load_str("t.conf", &format!("{BASE}data-threads 8\n"), "/").unwrap();
    assert_eq!(
        ok.config.transport.data_threads,
        Some(DataThreads::Count(8))
    );
    let ok = load_str("t.conf", BASE, "/").unwrap();
    assert_eq!(ok.config.transport.data_threads, None);
    for bad in ["0", "9", "300", "many"] {
        let e = load_str("t.conf", &format!("{BASE}data-threads {bad}\n"), "/").unwrap_err();
        assert!(show(&e).starts_with("t.conf:6:"), "{bad}: {}", show(&e));
    }
    let e = load_str("t.conf", &format!("{BASE}data-threads 9\n"), "/").unwrap_err();
    assert!(show(&e).contains("1 to 8 or auto"), "{}", show(&e));
}

#[test]
fn coalesce_usecs_is_bounded_and_named_with_its_line() {
    let ok = load_str("t.conf", &format!("{BASE}coalesce-usecs 0\n"), "/").unwrap();
    assert_eq!(ok.config.transport.coalesce_usecs, Some(0));
    let ok = load_str("t.conf", &format!("{BASE}coalesce-usecs 1000\n"), "/").unwrap();
    assert_eq!(ok.config.transport.coalesce_usecs, Some(1000));
    let e = load_str("t.conf", &format!("{BASE}coalesce-usecs 1001\n"), "/").unwrap_err();
    assert!(
        show(&e).starts_with("t.conf:6:") && show(&e).contains("at most 1000"),
        "{}",
        show(&e)
    );
    let e = load_str("t.conf", &format!("{BASE}coalesce-usecs -5\n"), "/").unwrap_err();
    assert!(show(&e).starts_with("t.conf:6:"), "{}", show(&e));
}
