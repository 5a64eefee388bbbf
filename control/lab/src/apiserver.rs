//! The lab plays the API server for its manifest directory (`<state>/manifests/`): it
//! patches objects where they are declared, the way `kubectl patch` / flanneld's own Node
//! patch would change them in a cluster, and the agents see the change on `reload`.
//!
//! Files are YAML streams (`---` between documents) or JSON streams (`*.json`); `List`
//! objects are walked item by item. Only documents that change are rewritten (a changed
//! YAML document is re-serialized, which drops its comments); every other byte of the file is
//! kept. A file is replaced atomically (a hidden temporary file, then rename), so an agent
//! reading the directory at the same time sees the old or the new file, never half of one.

use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One document of a YAML stream: its separator line (`---…\n`, or empty for the first
/// document without one) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Doc {
    sep: String,
    body: String,
}

fn is_separator(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// Cuts a YAML stream at its `---` lines; the pieces concatenate back to `text`.
fn split_yaml(text: &str) -> Vec<Doc> {
    let mut docs = Vec::new();
    let mut cur = Doc {
        sep: String::new(),
        body: String::new(),
    };
    for line in text.split_inclusive('\n') {
        if is_separator(line) {
            docs.push(std::mem::replace(
                &mut cur,
                Doc {
                    sep: line.to_string(),
                    body: String::new(),
                },
            ));
        } else {
            cur.body.push_str(line);
        }
    }
    docs.push(cur);
    docs
}

fn is_manifest_name(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    !name.starts_with('.')
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| l.len() > ext.len() && l.ends_with(ext))
}

/// The manifest files of `dir` (as the loader reads them), in name order.
pub fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_manifest_name(name) && e.path().is_file() {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Calls `f` on every object of `v` (itself, or each item of a `*List`); true when any call
/// changed something.
fn visit(v: &mut Value, f: &mut dyn FnMut(&mut Value) -> Result<bool>) -> Result<bool> {
    let is_list = v
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && v.get("items").is_some_and(Value::is_array);
    if is_list {
        let mut changed = false;
        if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
            for it in items {
                changed |= f(it)?;
            }
        }
        Ok(changed)
    } else {
        f(v)
    }
}

/// Applies `f` to every object of one file's text; the new text when something changed.
fn edit_text(
    file: &Path,
    text: &str,
    f: &mut dyn FnMut(&mut Value) -> Result<bool>,
) -> Result<Option<String>> {
    let json = file
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if json {
        let mut values = Vec::new();
        for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            match v {
                Ok(v) => values.push(v),
                // A file the loader cannot read either: nothing in it to patch.
                Err(_) => return Ok(None),
            }
        }
        let mut changed = false;
        for v in &mut values {
            changed |= visit(v, f)?;
        }
        if !changed {
            return Ok(None);
        }
        let mut out = String::new();
        for v in &values {
            out.push_str(&serde_json::to_string_pretty(v)?);
            out.push('\n');
        }
        return Ok(Some(out));
    }
    let mut docs = split_yaml(text);
    let mut changed_any = false;
    for d in &mut docs {
        let Ok(mut y) = serde_norway::from_str::<serde_norway::Value>(&d.body) else {
            continue; // not YAML the loader accepts either
        };
        if y.apply_merge().is_err() {
            continue;
        }
        // Documents that are not plain JSON-like data (odd keys, tags) hold no object the
        // lab patches.
        let Ok(mut v) = serde_json::to_value(&y) else {
            continue;
        };
        if v.is_null() {
            continue;
        }
        if visit(&mut v, f)? {
            let mut body = serde_norway::to_string(&v)?;
            if !body.ends_with('\n') {
                body.push('\n');
            }
            d.body = body;
            changed_any = true;
        }
    }
    if !changed_any {
        return Ok(None);
    }
    let mut out = String::new();
    for d in &docs {
        out.push_str(&d.sep);
        if !d.sep.is_empty() && !d.sep.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&d.body);
    }
    Ok(Some(out))
}

/// Writes `text` to `path` atomically (`.<name>.tmp` in the same directory, then rename).
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("{} has no directory", path.display()))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Applies `f` to every object in the manifest files of `dir`, rewriting the files whose
/// objects changed. Returns the files rewritten.
pub fn edit_objects(
    dir: &Path,
    f: &mut dyn FnMut(&mut Value) -> Result<bool>,
) -> Result<Vec<PathBuf>> {
    let mut rewritten = Vec::new();
    for path in manifest_files(dir)? {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // unreadable or not UTF-8: the loader reports it
        };
        if let Some(new) =
            edit_text(&path, &text, f).with_context(|| format!("patching {}", path.display()))?
        {
            write_atomic(&path, &new)?;
            rewritten.push(path);
        }
    }
    Ok(rewritten)
}

/// Whether `v` is the object `kind` `namespace/name` (namespace `None`: cluster-scoped, and
/// an object without a namespace counts as `default` for namespaced kinds).
pub fn is_object(v: &Value, kind: &str, namespace: Option<&str>, name: &str) -> bool {
    let m = v.get("metadata");
    v.get("kind").and_then(Value::as_str) == Some(kind)
        && m.and_then(|m| m.get("name")).and_then(Value::as_str) == Some(name)
        && match namespace {
            None => true,
            Some(ns) => {
                m.and_then(|m| m.get("namespace"))
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    == ns
            }
        }
}

/// Sets `annotations` on the Node objects named in `patches` (name → annotations), keeping
/// their other annotations. Returns the node names that were found (patched or already up to
/// date).
pub fn annotate_nodes(
    dir: &Path,
    patches: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
) -> Result<Vec<String>> {
    let mut found = Vec::new();
    edit_objects(dir, &mut |v| {
        if v.get("kind").and_then(Value::as_str) != Some("Node") {
            return Ok(false);
        }
        let Some(name) = v
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return Ok(false);
        };
        let Some(want) = patches.get(&name) else {
            return Ok(false);
        };
        found.push(name);
        let meta = v
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| anyhow!("Node metadata is not an object"))?;
        let ann = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if !ann.is_object() {
            *ann = Value::Object(Default::default());
        }
        let ann = ann.as_object_mut().expect("made an object above");
        let mut changed = false;
        for (k, val) in want {
            if ann.get(k).and_then(Value::as_str) != Some(val.as_str()) {
                ann.insert(k.clone(), Value::String(val.clone()));
                changed = true;
            }
        }
        Ok(changed)
    })?;
    found.sort();
    found.dedup();
    Ok(found)
}

/// `kubectl scale`: sets `spec.replicas` of the workload `kind` `namespace/name`; false when
/// `dir` has no such object.
pub fn set_replicas(
    dir: &Path,
    kind: &str,
    namespace: &str,
    name: &str,
    replicas: u32,
) -> Result<bool> {
    let mut found = false;
    edit_objects(dir, &mut |v| {
        if found || !is_object(v, kind, Some(namespace), name) {
            return Ok(false);
        }
        found = true;
        let obj = v
            .as_object_mut()
            .ok_or_else(|| anyhow!("{kind} is not an object"))?;
        let spec = obj
            .entry("spec")
            .or_insert_with(|| Value::Object(Default::default()));
        let spec = spec
            .as_object_mut()
            .ok_or_else(|| anyhow!("{kind} {namespace}/{name}: spec is not an object"))?;
        if spec.get("replicas").and_then(Value::as_u64) == Some(u64::from(replicas)) {
            return Ok(false);
        }
        spec.insert("replicas".into(), Value::from(replicas));
        Ok(true)
    })?;
    Ok(found)
}

/// The first ConfigMap `namespace/name` in `dir`: its file and its `data[key]` (None when the
/// ConfigMap has no such key).
pub fn find_configmap_data(
    dir: &Path,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Option<(PathBuf, Option<String>)>> {
    for path in manifest_files(dir)? {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut hit: Option<Option<String>> = None;
        // A read-only walk: the closure never reports a change.
        edit_text(&path, &text, &mut |v| {
            if hit.is_none() && is_object(v, "ConfigMap", Some(namespace), name) {
                hit = Some(
                    v.get("data")
                        .and_then(|d| d.get(key))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                );
            }
            Ok(false)
        })?;
        if let Some(data) = hit {
            return Ok(Some((path, data)));
        }
    }
    Ok(None)
}

/// Sets `data[key] = value` on the ConfigMap `namespace/name`; false when there is none.
pub fn set_configmap_data(
    dir: &Path,
    namespace: &str,
    name: &str,
    key: &str,
    value: &str,
) -> Result<bool> {
    let mut found = false;
    edit_objects(dir, &mut |v| {
        if found || !is_object(v, "ConfigMap", Some(namespace), name) {
            return Ok(false);
        }
        found = true;
        let obj = v
            .as_object_mut()
            .ok_or_else(|| anyhow!("ConfigMap is not an object"))?;
        let data = obj
            .entry("data")
            .or_insert_with(|| Value::Object(Default::default()));
        if !data.is_object() {
            *data = Value::Object(Default::default());
        }
        let data = data.as_object_mut().expect("made an object above");
        if data.get(key).and_then(Value::as_str) == Some(value) {
            return Ok(false);
        }
        data.insert(key.to_string(), Value::String(value.to_string()));
        Ok(true)
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xdplane-lab-api-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn split_round_trips() {
        let t = "# head\na: 1\n---\nb: 2\n--- # c\nc: 3\n---\n";
        let d = split_yaml(t);
        assert_eq!(d.len(), 4);
        let back: String = d.iter().map(|d| format!("{}{}", d.sep, d.body)).collect();
        assert_eq!(back, t);
        assert!(is_separator("---\n"));
        assert!(is_separator("--- x"));
        assert!(!is_separator("----\n"));
        assert!(!is_separator(" ---\n"));
    }

    #[test]
    fn scales_a_deployment() {
        let d = tmp("scale");
        let tpl = "  selector:\n    matchLabels:\n      app: x\n  template:\n    metadata:\n      labels:\n        app: x\n    spec:\n      containers:\n      - name: c\n        image: i\n";
        let text = format!(
            "# apps\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n{tpl}---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: other\n  namespace: prod\nspec:\n  replicas: 2\n{tpl}"
        );
        std::fs::write(d.join("apps.yaml"), text).unwrap();
        assert!(set_replicas(&d, "Deployment", "default", "web", 5).unwrap());
        let after = std::fs::read_to_string(d.join("apps.yaml")).unwrap();
        let l = xdplane_control::manifest::load_dir(&d).unwrap();
        let w = |ns: &str, n: &str| l.model.workloads[&(ns.to_string(), n.to_string())].replicas;
        assert_eq!(w("default", "web"), 5);
        assert_eq!(w("prod", "other"), 2, "the other Deployment is untouched");
        assert!(after.contains("name: other\n  namespace: prod\nspec:\n  replicas: 2\n"));
        // Same value: nothing rewritten; unknown object: false.
        assert!(set_replicas(&d, "Deployment", "default", "web", 5).unwrap());
        assert_eq!(std::fs::read_to_string(d.join("apps.yaml")).unwrap(), after);
        assert!(!set_replicas(&d, "Deployment", "default", "nope", 1).unwrap());
        assert!(!set_replicas(&d, "Deployment", "prod", "web", 1).unwrap());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn annotates_nodes_in_place() {
        let d = tmp("nodes");
        let nodes = "# my nodes\napiVersion: v1\nkind: Node\nmetadata:\n  name: server1\n  annotations:\n    keep: me\nspec:\n  podCIDR: 10.244.1.0/24\n---\n# untouched doc\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata:\n    name: server2\n";
        std::fs::write(d.join("nodes.yaml"), nodes).unwrap();
        std::fs::write(
            d.join("n3.json"),
            r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"server3"}}"#,
        )
        .unwrap();
        std::fs::write(
            d.join("other.yaml"),
            "# not touched\napiVersion: v1\nkind: Namespace\nmetadata: {name: q}\n",
        )
        .unwrap();
        std::fs::write(d.join("notes.txt"), "kind: Node").unwrap();
        let mut patches = BTreeMap::new();
        for n in ["server1", "server2", "server3", "server9"] {
            patches.insert(
                n.to_string(),
                BTreeMap::from([(
                    "flannel.alpha.coreos.com/backend-data".to_string(),
                    "null".to_string(),
                )]),
            );
        }
        let found = annotate_nodes(&d, &patches).unwrap();
        assert_eq!(found, ["server1", "server2", "server3"]);
        let text = std::fs::read_to_string(d.join("nodes.yaml")).unwrap();
        assert!(text.contains("# untouched doc"), "{text}");
        let r = xdplane_control::manifest::load_dir(&d).unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        for n in ["server1", "server2", "server3"] {
            assert_eq!(
                r.model.nodes[n].annotations["flannel.alpha.coreos.com/backend-data"], "null",
                "{n}: the string null, not a YAML null"
            );
        }
        assert_eq!(r.model.nodes["server1"].annotations["keep"], "me");
        assert!(r.model.namespaces.contains_key("prod"));
        assert_eq!(
            std::fs::read_to_string(d.join("other.yaml")).unwrap(),
            "# not touched\napiVersion: v1\nkind: Namespace\nmetadata: {name: q}\n"
        );
        // Nothing to change: no file is rewritten.
        let before = std::fs::metadata(d.join("nodes.yaml"))
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        annotate_nodes(&d, &patches).unwrap();
        let after = std::fs::metadata(d.join("nodes.yaml"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after);
        assert!(
            std::fs::read_dir(&d).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")),
            "no temporary file left"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn configmap_data() {
        let d = tmp("cm");
        assert!(
            find_configmap_data(&d, "kube-system", "kube-flannel-cfg", "net-conf.json")
                .unwrap()
                .is_none()
        );
        std::fs::write(
            d.join("cm.yaml"),
            "kind: ConfigMap\napiVersion: v1\nmetadata:\n  name: kube-flannel-cfg\n  namespace: kube-system\ndata:\n  net-conf.json: |\n    {\"Network\": \"10.244.0.0/16\"}\n",
        )
        .unwrap();
        std::fs::write(
            d.join("other-ns.yaml"),
            "kind: ConfigMap\napiVersion: v1\nmetadata:\n  name: kube-flannel-cfg\ndata:\n  net-conf.json: other\n",
        )
        .unwrap();
        let (file, data) =
            find_configmap_data(&d, "kube-system", "kube-flannel-cfg", "net-conf.json")
                .unwrap()
                .unwrap();
        assert_eq!(file, d.join("cm.yaml"));
        assert_eq!(data.as_deref(), Some("{\"Network\": \"10.244.0.0/16\"}\n"));
        assert!(
            set_configmap_data(
                &d,
                "kube-system",
                "kube-flannel-cfg",
                "net-conf.json",
                "{}\n"
            )
            .unwrap()
        );
        let (_, data) = find_configmap_data(&d, "kube-system", "kube-flannel-cfg", "net-conf.json")
            .unwrap()
            .unwrap();
        assert_eq!(data.as_deref(), Some("{}\n"));
        let (_, other) = find_configmap_data(&d, "default", "kube-flannel-cfg", "net-conf.json")
            .unwrap()
            .unwrap();
        assert_eq!(
            other.as_deref(),
            Some("other"),
            "the default-namespace one is untouched"
        );
        assert!(!set_configmap_data(&d, "kube-system", "nope", "k", "v").unwrap());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
