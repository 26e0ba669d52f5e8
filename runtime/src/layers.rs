//! The shape of the code, checked rather than hoped for: the import graph between the
//! modules of `runtime/src` has no circle, no module imports from a layer above its
//! own, and no source file grows past [`MAX_LINES`] lines. docs/architecture.md draws
//! the same layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, lowest first: a module may import from its own layer and the ones
/// below.
const LAYERS: &[&[&str]] = &[
    // Leaves: no knowledge of guests, jobs or services.
    &["units", "confine", "storage", "tls", "recent", "capture", "failure", "spec", "logging", "metrics"],
    // The engine and what a guest may touch.
    &["engine", "abi", "adapt", "compile", "python", "sandbox", "objects", "capability"],
    // Plugins and their warm instances.
    &["plugin", "lifecycle", "pool"],
    // The contract's HTTP server and client.
    &["http"],
    // Jobs: sources, executors, the runner.
    &["job"],
    // Durable job state, then the one job engine over it.
    &["journal"],
    &["driver"],
    // Many machines, then the job service, then the command line.
    &["broker"],
    &["operator"],
    &["cli"],
];

/// The longest a source file may be.
const MAX_LINES: usize = 720;

/// Every module (`job::runner`) with its file's text, tests and comments left out.
fn modules() -> BTreeMap<String, (String, usize)> {
    fn walk(dir: &Path, out: &mut BTreeMap<String, (String, usize)>, root: &Path) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out, root);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(root).unwrap().with_extension("");
            let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] || parts == ["layers"] {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let lines = text.lines().count();
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
            let code: String =
                code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
            out.insert(parts.join("::"), (code, lines));
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    walk(&root, &mut out, &root);
    out
}

/// Each module's imports of other modules (the longest module path a `crate::` or
/// `super::` path starts with).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let paths = regex::Regex::new(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)").unwrap();
    let mut graph = BTreeMap::new();
    for (name, (code, _)) in &modules {
        let mut deps = BTreeSet::new();
        for caps in paths.captures_iter(code) {
            let mut base: Vec<&str> = match &caps[1] {
                "crate" => Vec::new(),
                _ => name.split("::").collect::<Vec<_>>().split_last().map(|(_, p)| p.to_vec()).unwrap_or_default(),
            };
            let rest: Vec<&str> = caps[2].trim_start_matches("::").split("::").collect();
            base.extend(rest);
            for k in (1..=base.len()).rev() {
                let candidate = base[..k].join("::");
                if modules.contains_key(&candidate) {
                    if candidate != *name {
                        deps.insert(candidate);
                    }
                    break;
                }
            }
        }
        graph.insert(name.clone(), deps);
    }
    graph
}

fn layer(module: &str) -> usize {
    let top = module.split("::").next().unwrap_or(module);
    LAYERS.iter().position(|l| l.contains(&top)).unwrap_or_else(|| panic!("module {top} is in no layer of layers.rs"))
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let mut wrong = Vec::new();
    for (from, deps) in graph() {
        for to in deps {
            if layer(&to) > layer(&from) {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports from a higher layer: {wrong:?}");
}

#[test]
fn the_import_graph_has_no_circle() {
    let graph = graph();
    // Depth-first search with colours: a grey module met again closes a circle.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        colour: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        colour.insert(node, 1);
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            match colour.get(next.as_str()) {
                Some(1) => {
                    let start = path.iter().position(|n| n == next).unwrap_or(0);
                    let mut circle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                    circle.push(next.clone());
                    return Some(circle);
                }
                Some(_) => {}
                None => {
                    if let Some(circle) = visit(next, graph, colour, path) {
                        return Some(circle);
                    }
                }
            }
        }
        path.pop();
        colour.insert(node, 2);
        None
    }
    let mut colour = BTreeMap::new();
    for node in graph.keys() {
        if !colour.contains_key(node.as_str())
            && let Some(circle) = visit(node, &graph, &mut colour, &mut Vec::new())
        {
            panic!("a circle of imports: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn the_checks_see_the_imports() {
    // The premise of the two tests above: the graph is read at all.
    let graph = graph();
    assert!(graph["cli::service"].contains("operator::config"), "{:?}", graph["cli::service"]);
    assert!(graph["plugin::host::objects"].contains("objects"), "{:?}", graph["plugin::host::objects"]);
    assert!(graph["job::source"].contains("job::inputs"), "super:: paths count: {:?}", graph["job::source"]);
}

#[test]
fn no_source_file_is_too_long() {
    let long: Vec<String> = modules()
        .into_iter()
        .filter(|(_, (_, lines))| *lines > MAX_LINES)
        .map(|(name, (_, lines))| format!("{name}: {lines} lines"))
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}
