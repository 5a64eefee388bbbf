//! Robustness: no input makes the loader, the scheduler or the compiler panic or hang.
//!
//! The fixtures are mutated by a fixed pseudo-random sequence (same cases on every run), and
//! a few hostile inputs are tried directly.

use std::path::Path;
use std::time::{Duration, Instant};
use xdplane_control::compile::{LocalAttachment, LocalState, compile};
use xdplane_control::manifest::{LoadResult, load_str};
use xdplane_control::schedule::lab_pods;
use xdplane_pipeline::{PortConfig, PortKind};

/// xorshift64*: a tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }
}

const TOKENS: &[&str] = &[
    ":",
    "-",
    " ",
    "\n",
    "---\n",
    "...\n",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "'",
    "&a ",
    "*a",
    "<<: ",
    "!!str ",
    "#",
    "\t",
    "0",
    "99999999999",
    "-1",
    "null",
    "~",
    "10.244.1.0/24",
    "é",
    "\u{feff}",
    "kind: List\n",
    "items:\n",
    "apiVersion: v1\n",
    "kind: Pod\n",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for _ in 0..=rng.below(4) {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let i = rng.below(lines.len());
        match rng.below(6) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 => {
                let j = rng.below(lines.len());
                lines.swap(i, j);
            }
            3 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let l = &mut lines[i];
                let mut at = rng.below(l.len() + 1);
                while !l.is_char_boundary(at) {
                    at -= 1;
                }
                l.insert_str(at, t);
            }
            4 => {
                let l = &mut lines[i];
                let mut at = rng.below(l.len() + 1);
                while !l.is_char_boundary(at) {
                    at -= 1;
                }
                l.truncate(at);
            }
            _ => {
                // Re-indent a line: the commonest real-world YAML mistake.
                let n = rng.below(5);
                let l = lines[i].trim_start().to_string();
                lines[i] = format!("{}{l}", " ".repeat(n));
            }
        }
    }
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

fn local() -> LocalState {
    LocalState {
        node: "server1".into(),
        pod_cidr_override: None,
        pod_mtu: Some(1450),
        ports: vec![PortConfig {
            id: 1,
            name: "veth".into(),
            ifindex: 5,
            mac: [2, 0, 0, 0, 0, 1],
            kind: PortKind::Pod,
        }],
        attachments: vec![LocalAttachment {
            port: 1,
            ip: "10.244.1.2".parse().unwrap(),
            mac: [2, 0, 0, 0, 0, 2],
            pod_namespace: "default".into(),
            pod_name: "p".into(),
            container_id: "c".into(),
        }],
        ..Default::default()
    }
}

fn exercise(label: &str, text: &str) {
    let mut r = LoadResult::default();
    load_str(label, text, &mut r);
    let nodes: Vec<String> = r.model.nodes.keys().cloned().collect();
    let _ = lab_pods(&r.model, &nodes);
    let _ = compile(&r.model, &local(), 1);
    for e in &r.errors {
        let s = e.to_string();
        assert!(s.starts_with(label), "{s}");
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let sources = [
        std::fs::read_to_string(dir.join("lab/cluster.yaml")).unwrap(),
        std::fs::read_to_string(dir.join("bad/bad.yaml")).unwrap(),
    ];
    let json = std::fs::read_to_string(dir.join("lab/workloads.json")).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let start = Instant::now();
    for i in 0..600 {
        let src = &sources[i % sources.len()];
        exercise("m.yaml", &mutate(&mut rng, src));
        exercise("m.json", &mutate(&mut rng, &json));
    }
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "too slow: {:?}",
        start.elapsed()
    );
}

#[test]
fn hostile_inputs_are_errors() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_map = "a:\n".to_string()
        + &(1..2000)
            .map(|i| format!("{}a:\n", " ".repeat(i)))
            .collect::<String>();
    // Each level refers to the previous one ten times: 10^9 nodes if expanded.
    let bomb = "a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n".to_string()
        + &(b'b'..=b'j')
            .map(|c| {
                let p = char::from(c - 1);
                let c = char::from(c);
                format!("{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n")
            })
            .collect::<String>();
    let start = Instant::now();
    for (name, text, why) in [
        ("deep", deep.as_str(), "recursion limit exceeded"),
        ("deep-map", &deep_map, "recursion limit exceeded"),
        ("bomb", &bomb, "repetition limit exceeded"),
    ] {
        let mut r = LoadResult::default();
        load_str("h.yaml", text, &mut r);
        assert_eq!(r.errors.len(), 1, "{name}: {:?}", r.errors);
        let msg = r.errors[0].to_string();
        assert!(msg.starts_with("h.yaml#1: invalid YAML: "), "{name}: {msg}");
        assert!(msg.contains(why), "{name}: {msg}");
        assert_eq!(r.model, Default::default(), "{name}");
    }
    let mut r = LoadResult::default();
    load_str(
        "h.json",
        &format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
        &mut r,
    );
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}
