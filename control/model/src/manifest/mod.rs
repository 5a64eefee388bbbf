//! The manifest-directory source: Kubernetes manifests (YAML or JSON) → [`Model`].
//!
//! Every `*.yaml`, `*.yml` and `*.json` file of a directory (not recursive, hidden files
//! skipped, in name order) is cut into documents (`---`), each document is read as a
//! Kubernetes object, deserialized into its `k8s-openapi` type, validated, and turned into the
//! model's own type. Kubernetes types go no further than this module.
//!
//! A bad object never stops the load: it becomes an [`ObjectError`] naming the file, the
//! document, the kind and the object, and it is skipped whole (no half-applied object). See
//! `control/model/README.md` for the rules.

mod allocate;
mod convert;
mod services;
mod split;

pub use allocate::{Allocation, allocate};
pub use services::{DEFAULT_AFFINITY_TIMEOUT, MAX_AFFINITY_TIMEOUT};

use crate::model::{Model, Namespace};
use serde::Serialize;
use serde_norway::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// Label the API server puts on every Namespace (`kubernetes.io/metadata.name: <name>`), so
/// NetworkPolicy namespace selectors can pick a namespace by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The directory itself could not be read (a file that cannot be read is an
/// [`ObjectError`] instead).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest directory {}: {source}", dir.display())]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where an object came from: a file, a document of it (1-based; 0 for the file as a whole)
/// and, inside a `List`, the item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub file: String,
    pub doc: usize,
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if self.doc > 0 {
            write!(f, "#{}", self.doc)?;
        }
        if let Some(i) = self.item {
            write!(f, ".items[{i}]")?;
        }
        Ok(())
    }
}

/// An object that was skipped, and why.
///
/// Displays as `deploy/lab/pods.yaml#2 Pod default/web: spec.nodeName: Invalid value: ...`:
/// file, `#` document (1-based), `.items[i]` inside a List, then the kind and
/// `namespace/name` (just `name` for cluster-scoped kinds) when they could be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectError {
    pub file: String,
    /// 1-based document index in the file; 0 when the error is about the whole file.
    pub doc: usize,
    /// Index in a List's `items`.
    pub item: Option<usize>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub message: String,
}

impl ObjectError {
    pub fn origin(&self) -> Origin {
        Origin {
            file: self.file.clone(),
            doc: self.doc,
            item: self.item,
        }
    }
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin())?;
        if let Some(k) = &self.kind {
            write!(f, " {k}")?;
        }
        write_ns_name(f, self.namespace.as_deref(), self.name.as_deref())?;
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ObjectError {}

fn write_ns_name(f: &mut fmt::Formatter<'_>, ns: Option<&str>, name: Option<&str>) -> fmt::Result {
    match (ns, name) {
        (Some(ns), Some(n)) => write!(f, " {ns}/{n}"),
        (None, Some(n)) => write!(f, " {n}"),
        (_, None) => Ok(()),
    }
}

/// An object of a kind this loader knowingly leaves to later sources (Ingress, NetworkPolicy, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectRef {
    pub file: String,
    pub doc: usize,
    pub item: Option<usize>,
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = Origin {
            file: self.file.clone(),
            doc: self.doc,
            item: self.item,
        };
        write!(f, "{o} {}", self.kind)?;
        write_ns_name(f, self.namespace.as_deref(), self.name.as_deref())
    }
}

/// What a load produced: the model of every good object, the errors of the bad ones, the
/// objects of kinds left to other sources.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    pub model: Model,
    pub errors: Vec<ObjectError>,
    pub ignored: Vec<ObjectRef>,
    /// Namespaces that Pods or workloads use but no manifest declares. They are in
    /// `model.namespaces` (with only the `kubernetes.io/metadata.name` label); a later
    /// declaration replaces them.
    pub implied_namespaces: BTreeSet<String>,
    /// Objects that were loaded with something left out (an IPv6 clusterIP or externalIP, a
    /// LoadBalancer ingress IP with `ipMode: Proxy`, ...): not errors, worth a log line.
    pub notes: Vec<ObjectError>,
    /// Where each declared object came from, for duplicate reports.
    origins: BTreeMap<(&'static str, String, String), (String, Origin)>,
    /// Services written without a clusterIP, waiting for [`allocate`].
    pending_cluster_ip: BTreeSet<(String, String)>,
    /// Services whose ports without a nodePort get one from [`allocate`] (NodePort, and
    /// LoadBalancer unless `allocateLoadBalancerNodePorts: false`).
    pending_node_ports: BTreeSet<(String, String)>,
}

impl LoadResult {
    /// Where the object `(kind, namespace, name)` was declared (namespace `""` for
    /// cluster-scoped kinds). Workload kinds share one key space, as in [`Model::workloads`].
    pub fn origin_of(&self, kind: &str, namespace: &str, name: &str) -> Option<&Origin> {
        let class = class_of(kind)?;
        self.origins
            .get(&(class, namespace.to_string(), name.to_string()))
            .map(|(_, o)| o)
    }
}

/// The key space a kind's objects live in.
fn class_of(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Node" => "Node",
        "Namespace" => "Namespace",
        "Pod" => "Pod",
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => "Workload",
        "ConfigMap" => "ConfigMap",
        "Service" => "Service",
        "EndpointSlice" => "EndpointSlice",
        _ => return None,
    })
}

/// Kinds that later sources read; recorded in [`LoadResult::ignored`], not errors.
const IGNORED_KINDS: &[&str] = &[
    "APIService",
    "CSIDriver",
    "ClusterRole",
    "ClusterRoleBinding",
    "ConfigMap",
    "ControllerRevision",
    "CronJob",
    "CustomResourceDefinition",
    "Endpoints",
    "Event",
    "HorizontalPodAutoscaler",
    "IPAddress",
    "Ingress",
    "IngressClass",
    "Job",
    "Lease",
    "LimitRange",
    "MutatingWebhookConfiguration",
    "NetworkPolicy",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "PodDisruptionBudget",
    "PodTemplate",
    "PriorityClass",
    "ReplicationController",
    "ResourceQuota",
    "Role",
    "RoleBinding",
    "RuntimeClass",
    "Secret",
    "ServiceAccount",
    "ServiceCIDR",
    "StorageClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
];

/// Loads every manifest file of `dir` (see the module docs), then does what the API server's
/// allocators would have done ([`allocate`] with the default [`Allocation`]). Fails only when
/// `dir` itself cannot be listed; unreadable files and bad objects are [`LoadResult::errors`].
pub fn load_dir(dir: &Path) -> Result<LoadResult, ManifestError> {
    let rd = std::fs::read_dir(dir).map_err(|source| ManifestError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| ManifestError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue; // not UTF-8: cannot end in .yaml as a str either
        };
        if name.starts_with('.') || !is_manifest_name(name) {
            continue;
        }
        files.push(name.to_string());
    }
    files.sort();

    let mut out = LoadResult::default();
    for name in files {
        let path = dir.join(&name);
        let label = path.display().to_string();
        // Follows symlinks; directories named `x.yaml` are skipped.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => continue,
            _ => {}
        }
        match std::fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => load_str(&label, &text, &mut out),
                Err(e) => out
                    .errors
                    .push(file_error(&label, format!("not UTF-8 text: {e}"))),
            },
            Err(e) => out
                .errors
                .push(file_error(&label, format!("cannot read: {e}"))),
        }
    }
    allocate(&mut out, &Allocation::default());
    Ok(out)
}

fn is_manifest_name(name: &str) -> bool {
    [".yaml", ".yml", ".json"]
        .iter()
        .any(|ext| name.len() > ext.len() && name.to_ascii_lowercase().ends_with(ext))
}

fn file_error(file: &str, message: String) -> ObjectError {
    ObjectError {
        file: file.to_string(),
        doc: 0,
        item: None,
        kind: None,
        namespace: None,
        name: None,
        message,
    }
}

/// Loads the documents of one file's text into `into`. `file_label` names the file in
/// errors; a label ending in `.json` is read as a JSON stream (one or more concatenated
/// values), anything else as a YAML stream.
///
/// Services written without a clusterIP or nodePort get them only from [`allocate`]: call
/// it once after the last file ([`load_dir`] does).
pub fn load_str(file_label: &str, text: &str, into: &mut LoadResult) {
    if file_label.to_ascii_lowercase().ends_with(".json") {
        load_json(file_label, text, into);
        return;
    }
    for doc in split::split_yaml(text) {
        let loc = Loc {
            file: file_label,
            doc: doc.index,
            item: None,
        };
        match serde_norway::from_str::<Value>(&doc.text) {
            Ok(mut v) => {
                if let Err(e) = v.apply_merge() {
                    into.errors
                        .push(loc.error(None, None, None, format!("YAML merge key: {e}")));
                    continue;
                }
                load_value(into, &loc, v);
            }
            Err(e) => into.errors.push(loc.error(
                None,
                None,
                None,
                format!(
                    "invalid YAML: {}",
                    split::shift_lines(&e.to_string(), doc.first_line)
                ),
            )),
        }
    }
}

fn load_json(file_label: &str, text: &str, into: &mut LoadResult) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let stream = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
    for (i, v) in stream.enumerate() {
        let loc = Loc {
            file: file_label,
            doc: i + 1,
            item: None,
        };
        match v {
            Ok(v) => match serde_norway::to_value(&v) {
                Ok(v) => load_value(into, &loc, v),
                Err(e) => into.errors.push(loc.error(None, None, None, e.to_string())),
            },
            Err(e) => {
                // A JSON stream cannot be resumed after a syntax error.
                into.errors.push(loc.error(
                    None,
                    None,
                    None,
                    format!("invalid JSON: {e} (the rest of the file is not read)"),
                ));
                break;
            }
        }
    }
}

/// Where a document (or a List item) is.
struct Loc<'a> {
    file: &'a str,
    doc: usize,
    item: Option<usize>,
}

impl Loc<'_> {
    fn origin(&self) -> Origin {
        Origin {
            file: self.file.to_string(),
            doc: self.doc,
            item: self.item,
        }
    }

    fn error(
        &self,
        kind: Option<&str>,
        namespace: Option<&str>,
        name: Option<&str>,
        message: String,
    ) -> ObjectError {
        ObjectError {
            file: self.file.to_string(),
            doc: self.doc,
            item: self.item,
            kind: kind.map(str::to_string),
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            message,
        }
    }
}

/// What the header of an object says, read leniently (for error reports too).
struct Header {
    api_version: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping().and_then(|m| m.get(key))
}

fn header(v: &Value) -> Header {
    let s = |x: Option<&Value>| x.and_then(Value::as_str).map(str::to_string);
    let meta = get(v, "metadata");
    Header {
        api_version: s(get(v, "apiVersion")),
        kind: s(get(v, "kind")),
        namespace: s(meta.and_then(|m| get(m, "namespace"))).filter(|n| !n.is_empty()),
        name: s(meta.and_then(|m| get(m, "name"))).filter(|n| !n.is_empty()),
    }
}

fn load_value(into: &mut LoadResult, loc: &Loc<'_>, v: Value) {
    if v.is_null() {
        return; // an empty document
    }
    if v.as_mapping().is_none() {
        into.errors.push(
            loc.error(
                None,
                None,
                None,
                "not a Kubernetes object: the document must be a mapping with apiVersion, kind \
             and metadata"
                    .into(),
            ),
        );
        return;
    }
    let h = header(&v);
    let Some(kind) = h.kind.clone() else {
        let msg = match get(&v, "kind") {
            Some(_) => "kind: Invalid value: must be a string",
            None => "kind: Required value",
        };
        into.errors
            .push(loc.error(None, h.namespace.as_deref(), h.name.as_deref(), msg.into()));
        return;
    };
    let namespaced = !matches!(kind.as_str(), "Node" | "Namespace");
    // The namespace the object lands in, for reports: Kubernetes' default for namespaced
    // kinds we read; none for cluster-scoped ones.
    let shown_ns = if class_of(&kind).is_some() && namespaced {
        Some(h.namespace.clone().unwrap_or_else(|| "default".to_string()))
    } else {
        h.namespace.clone().filter(|_| namespaced)
    };
    let err =
        |message: String| loc.error(Some(&kind), shown_ns.as_deref(), h.name.as_deref(), message);
    let Some(api_version) = h.api_version.clone() else {
        let msg = match get(&v, "apiVersion") {
            Some(_) => "apiVersion: Invalid value: must be a string",
            None => "apiVersion: Required value",
        };
        into.errors.push(err(msg.into()));
        return;
    };

    if kind == "List" || (kind.ends_with("List") && kind.len() > 4 && get(&v, "items").is_some()) {
        load_list(into, loc, &kind, v);
        return;
    }

    if kind == "ConfigMap"
        && h.namespace.as_deref() == Some(crate::model::FLANNEL_CONFIGMAP.0)
        && h.name.as_deref() == Some(crate::model::FLANNEL_CONFIGMAP.1)
    {
        if api_version != "v1" {
            into.errors.push(err(format!(
                "apiVersion: Unsupported value: {api_version:?}: supported values: \"v1\""
            )));
            return;
        }
        match typed(v).and_then(convert::flannel_config) {
            Ok(nc) => insert(into, loc, &kind, Object::NetConf(nc)),
            Err(message) => into.errors.push(err(message)),
        }
        return;
    }

    let required_api = match kind.as_str() {
        "Node" | "Namespace" | "Pod" => Some("v1"),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => Some("apps/v1"),
        "Service" => Some("v1"),
        "EndpointSlice" => Some("discovery.k8s.io/v1"),
        _ => None,
    };
    let Some(required_api) = required_api else {
        if IGNORED_KINDS.contains(&kind.as_str()) {
            into.ignored.push(ObjectRef {
                file: loc.file.to_string(),
                doc: loc.doc,
                item: loc.item,
                api_version,
                kind,
                namespace: h.namespace,
                name: h.name,
            });
        } else {
            into.errors.push(err(format!(
                "unknown kind {kind:?} (apiVersion {api_version:?}): xdplane reads Node, \
                     Namespace, Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet, Service, \
                     EndpointSlice and List"
            )));
        }
        return;
    };

    if api_version != required_api {
        into.errors.push(err(format!(
            "apiVersion: Unsupported value: {api_version:?}: supported values: {required_api:?}"
        )));
        return;
    }

    let converted = match kind.as_str() {
        "Node" => typed(v).and_then(convert::node).map(Object::Node),
        "Namespace" => typed(v).and_then(convert::namespace).map(Object::Namespace),
        "Pod" => typed(v).and_then(convert::pod).map(Object::Pod),
        "Deployment" => typed(v).and_then(convert::deployment).map(Object::Workload),
        "ReplicaSet" => typed(v)
            .and_then(convert::replica_set)
            .map(Object::Workload),
        "StatefulSet" => typed(v)
            .and_then(convert::stateful_set)
            .map(Object::Workload),
        "DaemonSet" => typed(v).and_then(convert::daemon_set).map(Object::Workload),
        "Service" => typed(v).and_then(services::service).map(Object::Service),
        "EndpointSlice" => typed(v)
            .and_then(services::endpoint_slice)
            .map(Object::EndpointSlice),
        _ => unreachable!("required_api covers exactly these kinds"),
    };
    match converted {
        Ok(obj) => insert(into, loc, &kind, obj),
        Err(message) => into.errors.push(err(message)),
    }
}

fn load_list(into: &mut LoadResult, loc: &Loc<'_>, kind: &str, v: Value) {
    let h = header(&v);
    if loc.item.is_some() {
        into.errors.push(loc.error(
            Some(kind),
            None,
            h.name.as_deref(),
            "a List inside a List is not supported".into(),
        ));
        return;
    }
    let items = match get(&v, "items") {
        None | Some(Value::Null) => return,
        Some(Value::Sequence(items)) => items.clone(),
        Some(_) => {
            into.errors.push(loc.error(
                Some(kind),
                None,
                h.name.as_deref(),
                "items: Invalid value: must be a list".into(),
            ));
            return;
        }
    };
    for (i, item) in items.into_iter().enumerate() {
        let item_loc = Loc {
            file: loc.file,
            doc: loc.doc,
            item: Some(i),
        };
        if item.is_null() {
            into.errors
                .push(item_loc.error(None, None, None, "empty item".into()));
            continue;
        }
        load_value(into, &item_loc, item);
    }
}

/// Deserializes a document into its k8s-openapi type; the message names the field path.
fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// A converted object, ready to insert.
enum Object {
    Node(crate::model::Node),
    Namespace(Namespace),
    Pod(crate::model::Pod),
    Workload(crate::model::Workload),
    NetConf(crate::model::NetConf),
    Service(services::ServiceIn),
    EndpointSlice(crate::model::EndpointSlice),
}

/// Inserts a converted object unless its key is taken (then the first stays and this one
/// is reported), and implies the namespace it uses.
fn insert(into: &mut LoadResult, loc: &Loc<'_>, kind: &str, obj: Object) {
    let (class, ns, name) = match &obj {
        Object::Node(n) => ("Node", String::new(), n.name.clone()),
        Object::Namespace(n) => ("Namespace", String::new(), n.name.clone()),
        Object::Pod(p) => ("Pod", p.namespace.clone(), p.name.clone()),
        Object::Workload(w) => ("Workload", w.namespace.clone(), w.name.clone()),
        Object::Service(s) => (
            "Service",
            s.service.namespace.clone(),
            s.service.name.clone(),
        ),
        Object::EndpointSlice(s) => ("EndpointSlice", s.namespace.clone(), s.name.clone()),
        Object::NetConf(_) => (
            "ConfigMap",
            crate::model::FLANNEL_CONFIGMAP.0.to_string(),
            crate::model::FLANNEL_CONFIGMAP.1.to_string(),
        ),
    };
    let key = (class, ns.clone(), name.clone());
    if let Some((first_kind, first)) = into.origins.get(&key) {
        let message = if first_kind == kind {
            format!("duplicate {kind}: already defined at {first}; the first definition is kept")
        } else {
            format!(
                "name taken by {first_kind} {ns}/{name} at {first} (kept): workloads of all \
                 kinds share one namespace/name space in the model"
            )
        };
        let shown_ns = (!ns.is_empty()).then_some(ns.as_str());
        into.errors
            .push(loc.error(Some(kind), shown_ns, Some(&name), message));
        return;
    }
    into.origins.insert(key, (kind.to_string(), loc.origin()));
    match obj {
        Object::Node(n) => {
            into.model.nodes.insert(n.name.clone(), n);
        }
        Object::Namespace(n) => {
            into.implied_namespaces.remove(&n.name);
            into.model.namespaces.insert(n.name.clone(), n);
        }
        Object::Pod(p) => {
            imply_namespace(into, &p.namespace);
            into.model
                .pods
                .insert((p.namespace.clone(), p.name.clone()), p);
        }
        Object::NetConf(n) => {
            into.model.net_conf = Some(n);
        }
        Object::Workload(w) => {
            imply_namespace(into, &w.namespace);
            into.model
                .workloads
                .insert((w.namespace.clone(), w.name.clone()), w);
        }
        Object::Service(s) => {
            imply_namespace(into, &ns);
            for note in s.notes {
                into.notes
                    .push(loc.error(Some(kind), Some(&ns), Some(&name), note));
            }
            let key = (ns.clone(), name.clone());
            if s.wants_cluster_ip {
                into.pending_cluster_ip.insert(key.clone());
            }
            if s.wants_node_ports {
                into.pending_node_ports.insert(key.clone());
            }
            into.model.services.insert(key, s.service);
        }
        Object::EndpointSlice(s) => {
            imply_namespace(into, &ns);
            into.model
                .endpoint_slices
                .insert((ns.clone(), name.clone()), s);
        }
    }
}

/// The lab is forgiving: a namespace used but not declared is created, as if declared with
/// no labels (the API server would reject the object instead).
fn imply_namespace(into: &mut LoadResult, ns: &str) {
    if into.model.namespaces.contains_key(ns) {
        return;
    }
    let mut labels = BTreeMap::new();
    labels.insert(NAMESPACE_NAME_LABEL.to_string(), ns.to_string());
    into.model.namespaces.insert(
        ns.to_string(),
        Namespace {
            name: ns.to_string(),
            labels,
        },
    );
    into.implied_namespaces.insert(ns.to_string());
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_services;
