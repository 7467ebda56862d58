//! The shape of the code, checked by `make check` (`cargo test -p truffles-tests
//! --test structure`): no import cycle between the files of `bot-runtime` and
//! `operator`, no source file over 700 lines, and no comment citing a document
//! that is not in the repository.
//!
//! A small reader of `use` trees and `crate::`/`super::` paths instead of a
//! crate from crates.io: the tools that draw module graphs (cargo-modules and
//! the like) need rust-analyzer's whole engine (a long build, pinned to one
//! toolchain) for a graph that the imports already spell out. What it reads:
//! every `use` statement (groups expanded), every `crate::`/`super::`/`self::`
//! path in code, and a file's references to its own child modules
//! (`chatflow::parse` in `channels/mod.rs`). `mod x;` itself is not an import.
//! `#[cfg(test)]` modules are left out: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 700;
const CRATES: [&str; 2] = ["bot-runtime/src", "operator/src"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `channels/mod.rs` → `["channels"]`, `channels/chatflow.rs` →
/// `["channels", "chatflow"]`, `lib.rs`/`main.rs` → the crate root `[]`.
fn module_path(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).expect("file under its root");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments, string and char literals, and
/// `#[cfg(test)]` items (replaced by spaces, so nothing else moves).
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            out.push_str(&" ".repeat(end));
            i += end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(rest.len(), |e| e + 2);
            out.push_str(&" ".repeat(end));
            i += end;
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let hashes = rest[1..].chars().take_while(|c| *c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let start = 2 + hashes;
            let end = rest[start..]
                .find(&close)
                .map_or(rest.len(), |e| start + e + close.len());
            out.push_str(&" ".repeat(end));
            i += end;
        } else if rest.starts_with('"') {
            let mut j = 1;
            while j < rest.len() {
                match rest.as_bytes()[j] {
                    b'\\' => j += 2,
                    b'"' => {
                        j += 1;
                        break;
                    }
                    _ => j += 1,
                }
            }
            let j = j.min(rest.len());
            out.push_str(&" ".repeat(j));
            i += j;
        } else if let Some(end) = char_literal(rest) {
            out.push_str(&" ".repeat(end));
            i += end;
        } else if rest.starts_with("#[cfg(test)]") {
            let end = item_end(rest);
            out.push_str(&" ".repeat(end));
            i += end;
        } else {
            let c = rest.chars().next().expect("not at the end");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The length of the char literal that starts `text` ('a', '\n', '\''), or
/// `None` for a lifetime ('a) or anything else.
fn char_literal(text: &str) -> Option<usize> {
    let mut chars = text.char_indices();
    if chars.next()?.1 != '\'' {
        return None;
    }
    let (at, first) = chars.next()?;
    if first == '\\' {
        let after = at + 2;
        return text.get(after..)?.find('\'').map(|e| after + e + 1);
    }
    let (close, c) = chars.next()?;
    (c == '\'').then_some(close + 1)
}

/// The length of the item that starts `text`: up to its `;` or its closing
/// brace, whichever closes first at depth 0.
fn item_end(text: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            ';' if depth == 0 => return i + 1,
            _ => {}
        }
    }
    text.len()
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand_use(&format!("{prefix}{p}")))
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every path of the file that names a module of the crate: the expanded
/// `use` trees, and `crate::`, `super::`, `self::` and `<child>::` paths in code.
fn paths(code: &str, children: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before_ok = rest[..at].chars().next_back().is_none_or(|c| !is_ident(c));
        let after = &rest[at + 4..];
        if before_ok {
            let end = after.find(';').unwrap_or(after.len());
            found.extend(expand_use(&after[..end]));
        }
        rest = after;
    }
    let chars: Vec<(usize, char)> = code.char_indices().collect();
    for (n, &(i, _)) in chars.iter().enumerate() {
        let start_ok = n == 0 || !is_ident(chars[n - 1].1) && chars[n - 1].1 != ':';
        if !start_ok {
            continue;
        }
        let tail = &code[i..];
        let starts_path = ["crate::", "super::", "self::"]
            .iter()
            .any(|p| tail.starts_with(p))
            || children
                .iter()
                .any(|c| tail.starts_with(c.as_str()) && tail[c.len()..].starts_with("::"));
        if starts_path {
            let end = tail
                .find(|c: char| !(is_ident(c) || c == ':'))
                .unwrap_or(tail.len());
            // `super::{a, b}` ends in `::`: a use group, expanded above.
            if !tail[..end].ends_with("::") {
                found.push(tail[..end].to_string());
            }
        }
    }
    found
}

struct Module {
    file: String,
    path: Vec<String>,
    children: BTreeSet<String>,
    code: String,
}

/// The module a path ends in (the longest prefix that is a file of the crate).
fn resolve(from: &Module, path: &str, files: &BTreeMap<Vec<String>, usize>) -> Option<Vec<String>> {
    let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let first = *segments.first()?;
    // `self`/`super` are relative to the module the file *is*; a child's name
    // resolves under it.
    let (mut base, rest): (Vec<String>, &[&str]) = match first {
        "crate" => (Vec::new(), &segments[1..]),
        "self" => (from.path.clone(), &segments[1..]),
        "super" => {
            let mut base = from.path.clone();
            let mut n = 0;
            while segments.get(n) == Some(&"super") {
                base.pop();
                n += 1;
            }
            (base, &segments[n..])
        }
        child if from.children.contains(child) => (from.path.clone(), &segments[..]),
        _ => return None,
    };
    let mut best = files.contains_key(&base).then(|| base.clone());
    for seg in rest {
        base.push((*seg).to_string());
        if files.contains_key(&base) {
            best = Some(base.clone());
        } else {
            break;
        }
    }
    best
}

struct Graph {
    names: Vec<String>,
    edges: Vec<BTreeMap<usize, BTreeSet<String>>>,
}

fn graph(root: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let modules: Vec<Module> = files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).expect("source file");
            let code = code_only(&text);
            let children = code
                .split(';')
                .filter_map(|stmt| {
                    let stmt = stmt.trim();
                    let stmt = stmt.rsplit(']').next().unwrap_or(stmt).trim();
                    let stmt = stmt.strip_prefix("pub ").unwrap_or(stmt);
                    let stmt = stmt.strip_prefix("pub(crate) ").unwrap_or(stmt);
                    stmt.strip_prefix("mod ")
                        .filter(|name| name.chars().all(is_ident))
                        .map(str::to_string)
                })
                .collect();
            Module {
                file: file
                    .strip_prefix(workspace())
                    .unwrap_or(file)
                    .display()
                    .to_string(),
                path: module_path(root, file),
                children,
                code,
            }
        })
        .collect();
    // main.rs and lib.rs are both the root `[]`; main.rs only uses the library
    // by its crate name, so the root is lib.rs.
    let mut index = BTreeMap::new();
    for (i, m) in modules.iter().enumerate() {
        if !m.file.ends_with("main.rs") || !index.contains_key(&m.path) {
            index.insert(m.path.clone(), i);
        }
    }
    let mut edges = vec![BTreeMap::<usize, BTreeSet<String>>::new(); modules.len()];
    for (i, m) in modules.iter().enumerate() {
        for path in paths(&m.code, &m.children) {
            if let Some(target) = resolve(m, &path, &index)
                && let Some(&j) = index.get(&target)
                && j != i
            {
                let name = path.rsplit("::").next().unwrap_or(&path).to_string();
                let names = edges[i].entry(j).or_default();
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        }
    }
    Graph {
        names: modules.into_iter().map(|m| m.file).collect(),
        edges,
    }
}

/// Tarjan's strongly connected components; each component of two or more
/// files is an import cycle.
fn cycles(graph: &Graph) -> Vec<Vec<usize>> {
    struct State<'a> {
        graph: &'a Graph,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        found: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        let targets: Vec<usize> = s.graph.edges[v].keys().copied().collect();
        for w in targets {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let n = graph.names.len();
    let mut state = State {
        graph,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in 0..n {
        if state.index[v].is_none() {
            visit(&mut state, v);
        }
    }
    state.found
}

fn describe(graph: &Graph, cycle: &[usize]) -> String {
    let members: BTreeSet<usize> = cycle.iter().copied().collect();
    let mut text = format!("cycle of {} files:\n", cycle.len());
    for &v in cycle {
        for (w, names) in &graph.edges[v] {
            if members.contains(w) {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                text.push_str(&format!(
                    "  {} -> {}: {}\n",
                    graph.names[v],
                    graph.names[*w],
                    names.join(", ")
                ));
            }
        }
    }
    text
}

#[test]
fn no_import_cycle_between_the_files_of_a_crate() {
    let mut report = String::new();
    for krate in CRATES {
        let graph = graph(&workspace().join(krate));
        assert!(
            graph.edges.iter().any(|e| !e.is_empty()),
            "{krate}: no imports read (the reader is broken)"
        );
        for cycle in cycles(&graph) {
            report.push_str(&describe(&graph, &cycle));
        }
    }
    assert!(report.is_empty(), "import cycles:\n{report}");
}

#[test]
fn the_reader_sees_a_cycle_it_is_shown() {
    let dir = std::env::temp_dir().join(format!("truffles-structure-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("a")).expect("temp dir");
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\n").expect("write");
    std::fs::write(
        src.join("a/mod.rs"),
        "mod inner;\npub use inner::Thing;\npub fn f() {}\n",
    )
    .expect("write");
    std::fs::write(
        src.join("a/inner.rs"),
        "// use crate::b::Nothing; in a comment\npub struct Thing;\npub fn g() { crate::b::h(); }\n",
    )
    .expect("write");
    std::fs::write(
        src.join("b.rs"),
        "use crate::{a::{self, f}};\npub fn h() { let _ = \"crate::a::inner\"; f(); }\n#[cfg(test)]\nmod tests { use crate::a::inner::Thing; }\n",
    )
    .expect("write");
    let graph = graph(&src);
    let found = cycles(&graph);
    std::fs::remove_dir_all(&dir).expect("cleanup");
    assert_eq!(found.len(), 1, "{}", graph.names.join(", "));
    let names: Vec<&str> = found[0]
        .iter()
        .map(|&v| graph.names[v].rsplit("src/").next().unwrap_or(""))
        .collect();
    assert_eq!(names, ["a/inner.rs", "a/mod.rs", "b.rs"]);
}

#[test]
fn no_source_file_is_over_700_lines() {
    let mut long = Vec::new();
    for krate in CRATES {
        let mut files = Vec::new();
        rust_files(&workspace().join(krate), &mut files);
        for file in files {
            let lines = std::fs::read_to_string(&file)
                .expect("source")
                .lines()
                .count();
            if lines > MAX_LINES {
                long.push(format!("{} ({lines} lines)", file.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these by what they do: {}",
        long.join(", ")
    );
}

#[test]
fn comments_cite_only_documents_in_the_repository() {
    let mut found = Vec::new();
    for dir in ["bot-runtime", "operator", "crds", "migrations", "tests"] {
        let mut files = Vec::new();
        rust_files(&workspace().join(dir), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("source");
            for (n, line) in text.lines().enumerate() {
                if line.contains("//") && line.contains("SPEC") && !line.contains("\"SPEC") {
                    found.push(format!("{}:{}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "SPEC.md is not in the repository; cite docs/architecture.md: {}",
        found.join(", ")
    );
}
