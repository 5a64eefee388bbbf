use super::*;
use crate::model;
use std::net::Ipv4Addr;

fn load(text: &str) -> LoadResult {
    let mut r = LoadResult::default();
    load_str("t.yaml", text, &mut r);
    r
}

fn errors(r: &LoadResult) -> Vec<String> {
    r.errors.iter().map(ToString::to_string).collect()
}

fn key(ns: &str, n: &str) -> (String, String) {
    (ns.to_string(), n.to_string())
}

const POD: &str =
    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n";

#[test]
fn empty_and_comment_only_files_load_nothing() {
    for text in [
        "",
        "\n\n",
        "# just a comment\n",
        "---\n",
        "---\n---\n# c\n...\n",
    ] {
        let r = load(text);
        assert!(r.errors.is_empty(), "{text:?}: {:?}", r.errors);
        assert_eq!(r.model, Model::default(), "{text:?}");
    }
}

#[test]
fn pod_defaults_and_fields() {
    let r = load(
        "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  hostNetwork: true
  nodeName: server2
  containers:
  - name: a
    ports:
    - {containerPort: 80, name: http}
    - {containerPort: 53, protocol: UDP}
  - name: b
    ports:
    - {containerPort: 9, protocol: SCTP}
status:
  podIP: fd00::5
  podIPs:
  - ip: fd00::5
  - ip: 10.244.2.5
",
    );
    assert_eq!(errors(&r), Vec::<String>::new());
    let p = &r.model.pods[&key("default", "web")];
    assert_eq!(p.node_name.as_deref(), Some("server2"));
    assert!(p.host_network);
    // The IPv4 address of a dual-stack pod.
    assert_eq!(p.ip, Some(Ipv4Addr::new(10, 244, 2, 5)));
    let ports: Vec<_> = p
        .ports
        .iter()
        .map(|p| (p.port, p.protocol, p.name.clone()))
        .collect();
    assert_eq!(
        ports,
        [
            (80, model::Protocol::Tcp, Some("http".to_string())),
            (53, model::Protocol::Udp, None),
            (9, model::Protocol::Sctp, None)
        ]
    );
    // "default" is implied, with the label the API server puts on every namespace.
    assert_eq!(
        r.model.namespaces["default"].labels[NAMESPACE_NAME_LABEL],
        "default"
    );
    assert!(r.implied_namespaces.contains("default"));
}

#[test]
fn declared_namespace_replaces_an_implied_one() {
    let text = format!(
        "{POD}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  labels: {{env: lab}}\n"
    );
    let r = load(&text);
    assert_eq!(errors(&r), Vec::<String>::new());
    assert!(r.implied_namespaces.is_empty());
    assert_eq!(r.model.namespaces["default"].labels["env"], "lab");
    // Declaring it twice is a duplicate; implied-then-declared is not.
    let twice = format!("{text}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n");
    assert_eq!(
        errors(&load(&twice)),
        [
            "t.yaml#3 Namespace default: duplicate Namespace: already defined at t.yaml#2; the \
          first definition is kept"
        ]
    );
}

#[test]
fn list_and_typed_lists() {
    let r = load(
        "apiVersion: v1
kind: PodList
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: x}
  spec: {containers: [{name: c}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: B}
  spec: {containers: [{name: c}]}
- apiVersion: v1
  kind: List
  items: []
-
",
    );
    assert!(r.model.pods.contains_key(&key("x", "a")));
    assert_eq!(
        errors(&r),
        [
            "t.yaml#1.items[1] Pod default/B: metadata.name: Invalid value: \"B\": a lowercase \
             RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
             and must start and end with an alphanumeric character (e.g. 'example.com')",
            "t.yaml#1.items[2] List: a List inside a List is not supported",
            "t.yaml#1.items[3]: empty item",
        ]
    );
}

#[test]
fn json_stream_of_several_objects() {
    let mut r = LoadResult::default();
    load_str(
        "x.json",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}
           {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"b","labels":{"k":"v"}}}"#,
        &mut r,
    );
    assert_eq!(errors(&r), Vec::<String>::new());
    assert_eq!(r.model.namespaces.len(), 2);
    assert_eq!(r.model.namespaces["b"].labels["k"], "v");
}

#[test]
fn yaml_merge_keys_and_anchors() {
    let r = load(
        "apiVersion: v1
kind: Pod
metadata:
  name: m
  labels: &l {app: m}
spec:
  containers:
  - &c {name: one, ports: [{containerPort: 80}]}
  - <<: *c
    name: two
",
    );
    assert_eq!(errors(&r), Vec::<String>::new());
    let p = &r.model.pods[&key("default", "m")];
    assert_eq!(p.ports.len(), 2);
    assert_eq!(p.labels["app"], "m");
}

#[test]
fn header_errors() {
    let r = load("apiVersion: v1\nmetadata: {name: x}\n---\nkind: [Pod]\n---\n- a\n- b\n");
    assert_eq!(
        errors(&r),
        [
            "t.yaml#1 x: kind: Required value",
            "t.yaml#2: kind: Invalid value: must be a string",
            "t.yaml#3: not a Kubernetes object: the document must be a mapping with apiVersion, \
             kind and metadata",
        ]
    );
}

#[test]
fn missing_spec_and_containers() {
    let r = load(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\n\
         metadata: {name: b}\nspec: {containers: []}\n---\napiVersion: apps/v1\nkind: \
         Deployment\nmetadata: {name: d}\n---\napiVersion: v1\nkind: Pod\nmetadata: \
         {generateName: web-}\nspec: {containers: [{name: c}]}\n",
    );
    assert_eq!(
        errors(&r),
        [
            "t.yaml#1 Pod default/a: spec: Required value",
            "t.yaml#2 Pod default/b: spec.containers: Required value",
            "t.yaml#3 Deployment default/d: spec: Required value",
            "t.yaml#4 Pod: metadata.name: Required value: metadata.generateName is not supported \
             here: the lab needs stable names",
        ]
    );
    assert!(r.model.pods.is_empty());
}

#[test]
fn container_and_port_names() {
    let r = load(
        "apiVersion: v1
kind: Pod
metadata: {name: p, namespace: Bad_NS, labels: {'-x': 'a b'}}
spec:
  containers:
  - name: c
    ports: [{containerPort: 1, name: web}, {containerPort: 2, name: web}, {containerPort: 3, name: '8080'}]
  - name: c
  - name: ''
",
    );
    let e = errors(&r);
    assert_eq!(e.len(), 1);
    let parts: Vec<&str> = e[0].split("; ").collect();
    assert_eq!(
        parts,
        [
            "t.yaml#1 Pod Bad_NS/p: metadata.namespace: Invalid value: \"Bad_NS\": a lowercase RFC \
             1123 label must consist of lower case alphanumeric characters or '-', and must start \
             and end with an alphanumeric character (e.g. 'my-name', or '123-abc')",
            "metadata.labels: Invalid value: \"-x\": name part must consist of alphanumeric \
             characters, '-', '_' or '.', and must start and end with an alphanumeric character \
             (e.g. 'MyName', or 'my.name', or '123-abc')",
            "metadata.labels: Invalid value: \"a b\": a valid label must be an empty string or \
             consist of alphanumeric characters, '-', '_' or '.', and must start and end with an \
             alphanumeric character (e.g. 'MyValue', or 'my_value', or '12345')",
            "spec.containers[0].ports[1].name: Duplicate value: \"web\"",
            "spec.containers[0].ports[2].name: Invalid value: \"8080\": must contain at least one \
             letter (a-z)",
            "spec.containers[1].name: Duplicate value: \"c\"",
            "spec.containers[2].name: Required value",
        ]
    );
    assert!(r.model.pods.is_empty());
    assert!(
        r.model.namespaces.is_empty(),
        "no namespace implied by a rejected pod"
    );
}

#[test]
fn node_cidrs_and_addresses() {
    let r = load(
        "apiVersion: v1
kind: Node
metadata: {name: a}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.2.0/24]}
---
apiVersion: v1
kind: Node
metadata: {name: b}
spec: {podCIDRs: [10.244.1.0/24, fd00::/64]}
status:
  addresses:
  - {type: ExternalIP, address: 203.0.113.7}
  - {type: InternalIP, address: 'fd00::7'}
  - {type: InternalIP, address: 192.168.50.12}
  - {type: Hostname, address: b}
---
apiVersion: v1
kind: Node
metadata: {name: c}
spec: {podCIDR: 'fd00::/64'}
status:
  addresses:
  - {type: InternalIP, address: 192.168.50.300}
---
apiVersion: v1
kind: Node
metadata: {name: d}
spec: {podCIDR: 10.244.1.0/33}
---
apiVersion: v1
kind: Node
metadata: {name: e}
spec: {podCIDR: 'fd00::1/64'}
",
    );
    assert_eq!(
        errors(&r),
        [
            "t.yaml#1 Node a: spec.podCIDRs[0]: Invalid value: \"10.244.2.0/24\": must match \
             spec.podCIDR \"10.244.1.0/24\"",
            "t.yaml#3 Node c: status.addresses[0].address: Invalid value: \"192.168.50.300\": \
             must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            "t.yaml#4 Node d: spec.podCIDR: Invalid value: \"10.244.1.0/33\": prefix length 33 is \
             out of range: must be 0..=32",
            "t.yaml#5 Node e: spec.podCIDR: Invalid value: \"fd00::1/64\": must not have bits set \
             beyond the prefix length",
        ]
    );
    let b = &r.model.nodes["b"];
    assert_eq!(b.pod_cidr, Some("10.244.1.0/24".parse().unwrap()));
    assert_eq!(b.internal_ip, Some(Ipv4Addr::new(192, 168, 50, 12)));
    assert!(!r.model.nodes.contains_key("c"));
}

#[test]
fn ipv6_only_node_has_no_ipv4_pod_cidr() {
    let r =
        load("apiVersion: v1\nkind: Node\nmetadata: {name: v6}\nspec: {podCIDR: 'fd00::/64'}\n");
    assert_eq!(errors(&r), Vec::<String>::new());
    assert_eq!(r.model.nodes["v6"].pod_cidr, None);
}

#[test]
fn selectors() {
    let dep = |sel: &str, labels: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec:\n  selector: \
             {sel}\n  template:\n    metadata: {{labels: {labels}}}\n    spec: {{containers: \
             [{{name: c}}]}}\n"
        )
    };
    let ok = [
        ("{matchLabels: {app: a}}", "{app: a, x: y}"),
        (
            "{matchExpressions: [{key: app, operator: In, values: [a, b]}]}",
            "{app: b}",
        ),
        (
            "{matchExpressions: [{key: app, operator: NotIn, values: [a]}]}",
            "{app: b}",
        ),
        (
            "{matchExpressions: [{key: app, operator: Exists}]}",
            "{app: z}",
        ),
        (
            "{matchExpressions: [{key: x, operator: DoesNotExist}]}",
            "{app: z}",
        ),
    ];
    for (sel, labels) in ok {
        let r = load(&dep(sel, labels));
        assert_eq!(errors(&r), Vec::<String>::new(), "{sel} {labels}");
    }
    let bad = [
        (
            "{}",
            "{app: a}",
            "spec.selector: Invalid value: {}: empty selector is invalid for deployment",
        ),
        (
            "{matchLabels: {app: b}}",
            "{app: a}",
            "spec.template.metadata.labels: Invalid value: {\"app\":\"a\"}: `selector` does not match template `labels`",
        ),
        (
            "{matchExpressions: [{key: app, operator: In}]}",
            "{app: a}",
            "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
        ),
        (
            "{matchExpressions: [{key: app, operator: Exists, values: [a]}]}",
            "{app: a}",
            "spec.selector.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        ),
        (
            "{matchExpressions: [{key: app, operator: Has}]}",
            "{app: a}",
            "spec.selector.matchExpressions[0].operator: Unsupported value: \"Has\": supported values: \"DoesNotExist\", \"Exists\", \"In\", \"NotIn\"",
        ),
    ];
    for (sel, labels, msg) in bad {
        let r = load(&dep(sel, labels));
        assert_eq!(
            errors(&r),
            [format!("t.yaml#1 Deployment default/d: {msg}")],
            "{sel} {labels}"
        );
        assert!(r.model.workloads.is_empty());
    }
}

#[test]
fn workload_kinds() {
    let r = load(
        "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: ds, namespace: kube-system}
spec:
  selector: {matchLabels: {app: ds}}
  template:
    metadata: {labels: {app: ds}}
    spec: {hostNetwork: true, containers: [{name: c}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec: {nodeName: server3, containers: [{name: c}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs-without-template}
spec:
  selector: {matchLabels: {app: rs}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db.primary}
spec:
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: c}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: zero}
spec:
  replicas: 0
  selector: {matchLabels: {app: z}}
  template:
    metadata: {labels: {app: z}}
    spec: {containers: [{name: c}]}
",
    );
    assert_eq!(
        errors(&r),
        [
            "t.yaml#3 ReplicaSet default/rs-without-template: spec.template: Required value",
            "t.yaml#4 StatefulSet default/db.primary: metadata.name: Invalid value: \
             \"db.primary\": a lowercase RFC 1123 label must consist of lower case alphanumeric \
             characters or '-', and must start and end with an alphanumeric character (e.g. \
             'my-name', or '123-abc')",
        ]
    );
    let ds = &r.model.workloads[&key("kube-system", "ds")];
    assert!(ds.per_node && ds.host_network);
    assert_eq!(ds.replicas, 1);
    let rs = &r.model.workloads[&key("default", "rs")];
    assert_eq!(rs.node_name.as_deref(), Some("server3"));
    assert_eq!(rs.replicas, 1);
    assert_eq!(r.model.workloads[&key("default", "zero")].replicas, 0);
}

#[test]
fn ignored_kinds_are_recorded() {
    let r = load(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, \
         namespace: demo}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n",
    );
    assert!(r.errors.is_empty());
    let got: Vec<String> = r.ignored.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        ["t.yaml#1 NetworkPolicy demo/deny", "t.yaml#2 Secret s"]
    );
    assert_eq!(r.ignored[0].api_version, "networking.k8s.io/v1");
}

#[test]
fn origins_are_kept() {
    let r = load(&format!("---\n{POD}"));
    let o = r.origin_of("Pod", "default", "p").unwrap();
    assert_eq!(o.to_string(), "t.yaml#1");
    assert!(r.origin_of("Service", "default", "p").is_none());
}

#[test]
fn load_dir_reads_manifests_in_name_order_only() {
    let dir = std::env::temp_dir().join(format!("xdplane-manifest-test-{}", std::process::id()));
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _c = Cleanup(dir.clone());
    std::fs::create_dir_all(dir.join("sub.yaml")).unwrap();
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    let ns = |n: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}}}\n");
    std::fs::write(dir.join("b.yml"), ns("same")).unwrap();
    std::fs::write(dir.join("a.YAML"), ns("same")).unwrap();
    std::fs::write(
        dir.join("c.json"),
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"j"}}"#,
    )
    .unwrap();
    std::fs::write(dir.join(".hidden.yaml"), "{{{").unwrap();
    std::fs::write(dir.join("notes.txt"), "{{{").unwrap();
    std::fs::write(dir.join("nested/x.yaml"), "{{{").unwrap();
    std::fs::write(dir.join("z.yaml"), [0xff, 0xfe, 0x00]).unwrap();
    let r = load_dir(&dir).unwrap();
    let d = dir.display();
    assert_eq!(
        errors(&r),
        [
            format!(
                "{d}/b.yml#1 Namespace same: duplicate Namespace: already defined at \
                 {d}/a.YAML#1; the first definition is kept"
            ),
            format!("{d}/z.yaml: not UTF-8 text: invalid utf-8 sequence of 1 bytes from index 0"),
        ]
    );
    assert_eq!(r.model.namespaces.len(), 2);
}
