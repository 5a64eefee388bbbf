//! Golden tests: manifests in → model / pods / errors / snapshot dumps out.
//!
//! The expected outputs live in `tests/golden/`. After an intended change, regenerate them
//! with `XDPLANE_BLESS=1 cargo test -p xdplane-control --test golden` and review the diff.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use xdplane_control::compile::{
    CompileError, CompileWarning, LocalAttachment, LocalState, compile,
};
use xdplane_control::manifest::{LoadResult, load_dir, load_str};
use xdplane_control::model::Ipv4Cidr;
use xdplane_control::schedule::lab_pods;
use xdplane_pipeline::{PortConfig, PortKind};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Compares `actual` with `tests/golden/<name>`, or writes it when `XDPLANE_BLESS=1`.
fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("XDPLANE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (create it with XDPLANE_BLESS=1)", path.display()));
    if expected != actual {
        let mut diff = String::new();
        for (i, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
            if e != a {
                let _ = writeln!(diff, "line {}:\n  expected: {e}\n  actual:   {a}", i + 1);
            }
        }
        panic!(
            "{} differs from the output ({} vs {} lines):\n{diff}\nrerun with XDPLANE_BLESS=1 \
             to accept",
            path.display(),
            expected.lines().count(),
            actual.lines().count()
        );
    }
}

/// Paths in messages are made relative to the fixtures directory, so goldens do not depend
/// on where the repository is checked out.
fn report(r: &LoadResult) -> String {
    let root = format!("{}/", fixtures().display());
    let mut s = String::new();
    s.push_str("== errors\n");
    for e in &r.errors {
        let _ = writeln!(s, "{}", e.to_string().replace(&root, ""));
    }
    s.push_str("== notes\n");
    for n in &r.notes {
        let _ = writeln!(s, "{}", n.to_string().replace(&root, ""));
    }
    s.push_str("== ignored\n");
    for i in &r.ignored {
        let _ = writeln!(
            s,
            "{} ({})",
            i.to_string().replace(&root, ""),
            i.api_version
        );
    }
    s.push_str("== implied namespaces\n");
    for n in &r.implied_namespaces {
        let _ = writeln!(s, "{n}");
    }
    s.push_str("== model\n");
    s.push_str(&r.model.dump());
    s
}

fn lab() -> LoadResult {
    load_dir(&fixtures().join("lab")).expect("fixture dir is readable")
}

fn nodes() -> Vec<String> {
    vec!["server1".into(), "server2".into(), "server3".into()]
}

#[test]
fn lab_manifests_load() {
    let r = lab();
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    assert_eq!(r.model.nodes.len(), 3);
    let s3 = &r.model.nodes["server3"];
    assert_eq!(s3.pod_cidr, Some("10.244.3.0/24".parse().unwrap()));
    let demo2 = &r.model.workloads[&("default".to_string(), "demo2".to_string())];
    assert_eq!(demo2.replicas, 2);
    assert_eq!(demo2.pod_labels["app"], "myapp");
    assert_eq!(demo2.ports[0].port, 80);
    let client = &r.model.pods[&("default".to_string(), "client".to_string())];
    assert_eq!(client.node_name.as_deref(), Some("server1"));
    assert_eq!(client.ip, Some(Ipv4Addr::new(10, 244, 1, 9)));
    assert!(r.implied_namespaces.contains("ops"));
    golden("lab.load.txt", &report(&r));
}

#[test]
fn lab_pods_are_deterministic_and_spread() {
    let r = lab();
    let pods = lab_pods(&r.model, &nodes());
    let mut s = String::new();
    for p in &pods {
        let _ = writeln!(s, "{}", p.summary());
    }
    golden("lab.pods.txt", &s);

    // The seed's two Deployments get two pods each, on different nodes.
    for app in ["myapp", "nginx"] {
        let mine: Vec<_> = pods
            .iter()
            .filter(|p| p.labels.get("app").map(String::as_str) == Some(app))
            .collect();
        assert_eq!(mine.len(), 2, "{app}");
        assert_ne!(mine[0].node_name, mine[1].node_name, "{app}");
    }
    // One DaemonSet pod per node.
    let agents: Vec<_> = pods
        .iter()
        .filter(|p| p.name.starts_with("node-agent-"))
        .map(|p| p.node_name.clone().unwrap())
        .collect();
    assert_eq!(agents, ["server1", "server2", "server3"]);
    // Same input, same output; node order given does not matter.
    let again = lab_pods(
        &r.model,
        &["server3".into(), "server1".into(), "server2".into()],
    );
    assert_eq!(pods, again);
}

#[test]
fn template_change_renames_pods() {
    let base = std::fs::read_to_string(fixtures().join("lab/cluster.yaml")).unwrap();
    let changed = base.replace("image: myapp:v2", "image: myapp:v3");
    assert_ne!(base, changed);
    let mut a = LoadResult::default();
    load_str("a.yaml", &base, &mut a);
    let mut b = LoadResult::default();
    load_str("b.yaml", &changed, &mut b);
    let key = ("default".to_string(), "demo2".to_string());
    assert_ne!(
        a.model.workloads[&key].template_hash,
        b.model.workloads[&key].template_hash
    );
    let other = ("default".to_string(), "deployment".to_string());
    assert_eq!(
        a.model.workloads[&other].template_hash,
        b.model.workloads[&other].template_hash
    );
}

#[test]
fn bad_manifests_report_and_keep_the_good_ones() {
    let r = load_dir(&fixtures().join("bad")).unwrap();
    golden("bad.load.txt", &report(&r));

    let msgs: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
    let root = format!("{}/", fixtures().display());
    let msgs: Vec<String> = msgs.iter().map(|m| m.replace(&root, "")).collect();
    let has = |s: &str| {
        assert!(
            msgs.iter().any(|m| m == s),
            "missing error:\n  {s}\nerrors:\n  {}",
            msgs.join("\n  ")
        )
    };
    has(
        "bad/bad.yaml#1 Node server9: spec.podCIDR: Invalid value: \"10.244.9.5/24\": must not \
         have bits set beyond the prefix length (the subnet is 10.244.9.0/24)",
    );
    has(
        "bad/bad.yaml#3 Widget gadget: unknown kind \"Widget\" (apiVersion \"example.com/v1\"): \
         xdplane reads Node, Namespace, Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet, \
         Service, EndpointSlice and List",
    );
    has(
        "bad/bad.yaml#4 Pod default/big-port: spec.containers[0].ports[0].containerPort: Invalid \
         value: 70000: must be between 1 and 65535, inclusive",
    );
    has("bad/bad.yaml#7 Pod: metadata.name: Required value");
    has(
        "bad/bad.yaml#9 Deployment default/dup: duplicate Deployment: already defined at \
         bad/bad.yaml#8; the first definition is kept",
    );
    has(
        "bad/bad.yaml#13 Pod default/typed: spec.containers[0].ports[0].containerPort: invalid \
         type: string \"eighty\", expected i32",
    );
    has(
        "bad/bad.json#2: invalid JSON: expected `,` or `}` at line 3 column 1 (the rest of the \
         file is not read)",
    );
    has(
        "bad/bad.yaml#11 Pod demo/bad-node: spec.nodeName: Invalid value: \"Server_1\": a \
         lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or \
         '.', and must start and end with an alphanumeric character (e.g. 'example.com'); \
         spec.containers[0].ports[0].protocol: Unsupported value: \"tcp\": supported values: \
         \"SCTP\", \"TCP\", \"UDP\"",
    );
    has(
        "bad/bad.yaml#10 StatefulSet default/dup: name taken by Deployment default/dup at \
         bad/bad.yaml#8 (kept): workloads of all kinds share one namespace/name space in the model",
    );
    let broken = msgs
        .iter()
        .find(|m| m.starts_with("bad/bad.yaml#5: invalid YAML: "))
        .expect("the malformed document is reported");
    // The line is the file's own (line 35 is `   labels: {app: broken}`).
    assert!(broken.ends_with("at line 35 column 10"), "{broken}");

    // The good objects of the same files are loaded, also those after the malformed one.
    assert!(r.model.nodes.contains_key("server4"));
    assert!(!r.model.nodes.contains_key("server9"));
    assert!(r.model.namespaces.contains_key("json-ok"));
    assert!(!r.model.namespaces.contains_key("never-read"));
    let key = |n: &str| ("default".to_string(), n.to_string());
    assert!(r.model.pods.contains_key(&key("after-broken")));
    assert!(!r.model.pods.contains_key(&key("big-port")));
    // The first of two duplicates is kept.
    assert_eq!(r.model.workloads[&key("dup")].replicas, 1);
    assert_eq!(r.model.workloads[&key("dup")].kind, "Deployment");
}

#[test]
fn missing_directory_is_an_error() {
    let e = load_dir(&fixtures().join("no-such-dir")).unwrap_err();
    assert!(
        e.to_string().starts_with("cannot read manifest directory "),
        "{e}"
    );
}

fn port(id: u16, name: &str, kind: PortKind) -> PortConfig {
    PortConfig {
        id,
        name: name.into(),
        ifindex: 100 + u32::from(id),
        mac: [0x02, 0, 0, 0, 0, u8::try_from(id).unwrap()],
        kind,
    }
}

fn attach(port: u16, ip: [u8; 4], pod: &str) -> LocalAttachment {
    LocalAttachment {
        port,
        ip: Ipv4Addr::from(ip),
        mac: [0x0a, 0x58, ip[0], ip[1], ip[2], ip[3]],
        pod_namespace: "default".into(),
        pod_name: pod.into(),
        container_id: format!("{pod}-0123456789abcdef"),
    }
}

fn server1(attachments: Vec<LocalAttachment>) -> LocalState {
    LocalState {
        node: "server1".into(),
        pod_cidr_override: None,
        pod_mtu: Some(1450),
        ports: vec![
            port(0, "eth0", PortKind::Uplink),
            port(1, "veth-a", PortKind::Pod),
            port(2, "veth-b", PortKind::Pod),
            port(3, "veth-c", PortKind::Pod),
        ],
        attachments,
        ..Default::default()
    }
}

#[test]
fn compile_server1_with_two_pods() {
    let r = lab();
    let mut local = server1(vec![
        attach(1, [10, 244, 1, 2], "demo2-a"),
        attach(5, [10, 244, 1, 3], "deployment-b"),
    ]);
    // Port ids need not be dense: id 4 is unused and shows as null.
    local.ports.push(port(5, "veth-e", PortKind::Pod));
    let (snap, warnings) = compile(&r.model, &local, 7).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(snap.generation, 7);
    assert_eq!(snap.node.gateway, Ipv4Addr::new(10, 244, 1, 1));
    assert_eq!(snap.node.pod_net, Ipv4Addr::new(10, 244, 1, 0));
    assert_eq!(snap.node.pod_prefix, 24);
    assert_eq!(snap.local.len(), 2);
    assert_eq!(
        snap.local.get(Ipv4Addr::new(10, 244, 1, 3)).unwrap().port,
        5
    );
    assert_eq!(snap.port(0).unwrap().name, "eth0");
    assert!(snap.port(4).is_none());
    assert_eq!(snap.ports.len(), 6);
    let json = serde_json::to_string_pretty(&snap).unwrap() + "\n";
    golden("server1.snapshot.json", &json);
    // Pure: the same input compiles to the same snapshot.
    let (again, _) = compile(&r.model, &local, 7).unwrap();
    assert_eq!(
        serde_json::to_string(&again).unwrap(),
        serde_json::to_string(&snap).unwrap()
    );
}

#[test]
fn compile_skips_bad_attachments_and_reports_them() {
    let r = lab();
    let local = server1(vec![
        attach(1, [10, 244, 1, 2], "good"),
        attach(2, [10, 244, 2, 7], "elsewhere"),
        attach(3, [10, 244, 1, 2], "twin"),
        attach(9, [10, 244, 1, 20], "no-port"),
        attach(0, [10, 244, 1, 21], "on-uplink"),
        attach(3, [10, 244, 1, 1], "gateway"),
        attach(1, [10, 244, 1, 22], "second-on-port"),
        attach(3, [10, 244, 1, 4], "ok-too"),
    ]);
    let (snap, warnings) = compile(&r.model, &local, 1).unwrap();
    let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "pod default/elsewhere (container elsewhere-01): IP 10.244.2.7 is outside the \
             node's pod CIDR 10.244.1.0/24; pod left out",
            "IP 10.244.1.2 is claimed by pod default/good (container good-0123456) and pod \
             default/twin (container twin-0123456); the first keeps it, the second is left out",
            "pod default/no-port (container no-port-0123): port 9 does not exist; pod left out",
            "pod default/on-uplink (container on-uplink-01): port 0 (eth0) is an uplink, not a \
             pod port; pod left out",
            "pod default/gateway (container gateway-0123): IP 10.244.1.1 is the gateway \
             address; pod left out",
            "port 1 is claimed by pod default/good (container good-0123456) and pod \
             default/second-on-port (container second-on-po); the first keeps it, the second \
             is left out",
        ]
    );
    assert!(matches!(
        &warnings[1],
        CompileWarning::DuplicateIp { kept, skipped, .. } if kept == "default/good" && skipped == "default/twin"
    ));
    let kept: Vec<_> = snap
        .local
        .sorted()
        .into_iter()
        .map(|(ip, e)| (ip, e.port))
        .collect();
    assert_eq!(
        kept,
        [
            (Ipv4Addr::new(10, 244, 1, 2), 1),
            (Ipv4Addr::new(10, 244, 1, 4), 3)
        ]
    );
}

#[test]
fn compile_node_errors() {
    let r = lab();
    let mut local = server1(vec![]);
    local.node = "server7".into();
    assert_eq!(
        compile(&r.model, &local, 1).unwrap_err(),
        CompileError::UnknownNode {
            node: "server7".into()
        }
    );
    // An override makes an unknown node usable, with a warning.
    local.pod_cidr_override = Some("10.244.7.0/24".parse::<Ipv4Cidr>().unwrap());
    let (snap, w) = compile(&r.model, &local, 1).unwrap();
    assert_eq!(snap.node.gateway, Ipv4Addr::new(10, 244, 7, 1));
    assert_eq!(
        w[0].to_string(),
        "node \"server7\" is not in the model; using the pod CIDR override 10.244.7.0/24"
    );

    // An override that differs from the Node's podCIDR wins, with a warning.
    let mut local = server1(vec![attach(1, [10, 250, 0, 9], "p")]);
    local.pod_cidr_override = Some("10.250.0.0/16".parse().unwrap());
    let (snap, w) = compile(&r.model, &local, 1).unwrap();
    assert_eq!(snap.node.pod_prefix, 16);
    assert_eq!(snap.node.gateway, Ipv4Addr::new(10, 250, 0, 1));
    assert_eq!(snap.local.len(), 1);
    assert_eq!(
        w.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["node \"server1\": spec.podCIDR is 10.244.1.0/24, using the override 10.250.0.0/16"]
    );

    // A node without a pod CIDR.
    let mut m = r.model.clone();
    m.nodes.get_mut("server2").unwrap().pod_cidr = None;
    let mut local = server1(vec![]);
    local.node = "server2".into();
    let e = compile(&m, &local, 1).unwrap_err();
    assert_eq!(
        e,
        CompileError::NoPodCidr {
            node: "server2".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "node \"server2\" has no pod CIDR: set spec.podCIDR on the Node or give a pod CIDR override"
    );
    local.pod_cidr_override = Some("10.244.1.0/31".parse().unwrap());
    assert!(matches!(
        compile(&m, &local, 1),
        Err(CompileError::PodCidrTooSmall { .. })
    ));
    local.pod_cidr_override = None;
    let mut local = server1(vec![]);
    local.pod_mtu = Some(20);
    assert_eq!(
        compile(&r.model, &local, 1).unwrap_err(),
        CompileError::BadMtu { mtu: 20 }
    );
    let mut local = server1(vec![]);
    local.ports.push(port(2, "veth-x", PortKind::Pod));
    assert!(matches!(
        compile(&r.model, &local, 1),
        Err(CompileError::DuplicatePort { id: 2, .. })
    ));
}
