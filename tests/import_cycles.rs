//! The source layout's rules, checked on every `cargo test`: no import cycle between the
//! files of a crate (the daemon in `src/`, `registry/`, `estargz/`, and the converter and
//! testkit too), no file with more than [`MAX_CODE_LINES`] lines of non-test code, every
//! file opening with a `//!` comment that says its job, and no two modules of a crate
//! with the same name (`background.rs` beside `layer/background.rs` says nothing).
//!
//! How files are read: comments, string and char literals are blanked, then every item
//! under `#[cfg(test)]` (test modules, test-only imports and fixtures) is removed. The
//! module tree is followed from each crate root through `mod name;` declarations.
//!
//! An edge A -> B means file A names a module or item that lives in file B: through a
//! `use` (`crate::`, `super::`, `self::` or a child module's name) or a path written in
//! the code (`crate::metrics::global()`). A name that a module imports or re-exports is
//! followed to the file that defines it, so `super::Foo` re-exported from a sibling is an
//! edge to the sibling. A file's edges to its own ancestors (a child using the shared
//! types its folder's `mod.rs` defines) are not counted: a folder is one concept, its
//! `mod.rs` the shared part of it; every other edge is. A cycle is a strongly connected
//! set of files; each is reported with the edges that close it.
//!
//! Code lines: lines of a file that keep anything but whitespace after the blanking above
//! (so doc comments, blank lines and test modules do not count).
//!
//! `LAYOUT_ROOT=/path/to/checkout cargo test --test import_cycles -- --nocapture` checks
//! another checkout (e.g. an older commit) with the same rules.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// The most lines of non-test code a source file may have.
const MAX_CODE_LINES: usize = 500;

/// Crate roots whose files must not import each other in a circle.
const CYCLE_ROOTS: &[&str] = &[
    "src/lib.rs",
    "src/main.rs",
    "registry/src/lib.rs",
    "estargz/src/lib.rs",
    "converter/src/lib.rs",
    "converter/src/main.rs",
    "testkit/src/lib.rs",
];

#[test]
fn no_import_cycles_and_no_long_files() {
    let root = std::env::var_os("LAYOUT_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let mut problems = Vec::new();
    let mut files_seen = 0;
    for crate_root in CYCLE_ROOTS {
        let path = root.join(crate_root);
        if !path.exists() {
            continue;
        }
        let tree = Tree::load(&path);
        files_seen += tree.files.len();
        for cycle in tree.cycles() {
            problems.push(format!(
                "import cycle in {crate_root}:\n{}",
                cycle.render(&root)
            ));
        }
        for (name, files) in tree.duplicate_names() {
            let files: Vec<String> = files.iter().map(|f| rel(&root, f)).collect();
            problems.push(format!(
                "modules named `{name}` in {crate_root}: {}",
                files.join(", ")
            ));
        }
        for file in tree.undocumented_files() {
            problems.push(format!(
                "{} does not open with a `//!` comment",
                rel(&root, &file)
            ));
        }
        for (file, lines) in tree.long_files() {
            problems.push(format!(
                "{} has {lines} lines of non-test code (at most {MAX_CODE_LINES}): split it by concept",
                rel(&root, &file)
            ));
        }
    }
    assert!(
        files_seen > 50,
        "found only {files_seen} source files under {}",
        root.display()
    );
    println!("checked {files_seen} files under {}", root.display());
    assert!(
        problems.is_empty(),
        "{} layout problems:\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}

#[test]
fn finds_a_cycle_between_siblings_but_not_between_a_folder_and_its_parts() {
    let dir = std::env::temp_dir().join(format!("import-cycles-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("cache")).unwrap();
    let write = |name: &str, text: &str| fs::write(dir.join(name), text).unwrap();
    write("lib.rs", "mod cache;\nmod metrics;\nmod layer;\n");
    // cache/mod.rs <-> cache/disk.rs is a folder and its part: allowed.
    write(
        "cache/mod.rs",
        "mod disk;\npub use disk::Disk;\npub struct Key;\n",
    );
    write(
        "cache/disk.rs",
        "use super::Key;\n// crate::layer in a comment is no edge\npub struct Disk;\n\
         fn f() { crate::metrics::global(); let s = \"crate::layer::X\"; }\n",
    );
    // metrics -> layer -> cache (-> cache/disk) -> metrics is a cycle.
    write(
        "metrics.rs",
        "use crate::layer::Layer;\npub fn global() {}\n",
    );
    write(
        "layer.rs",
        "use crate::cache::Disk;\npub struct Layer;\n#[cfg(test)]\nmod tests { use crate::metrics; }\n",
    );
    let tree = Tree::load(&dir.join("lib.rs"));
    let cycles = tree.cycles();
    let _ = fs::remove_dir_all(&dir);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    let members: BTreeSet<String> = cycles[0].files.iter().map(|f| rel(&dir, f)).collect();
    let want: BTreeSet<String> = ["cache/disk.rs", "layer.rs", "metrics.rs"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(members, want);
}

#[test]
fn counts_code_lines_without_comments_tests_and_blank_lines() {
    let src = "//! doc\n\nfn a() {\n    // note\n    let s = \"}\"; /* x\n y */\n}\n\
               #[cfg(test)]\nmod tests {\n    fn t() {}\n}\n";
    assert_eq!(code_lines(&strip_tests(&blank(src))), 3);
}

fn rel(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}

/// `src` with comments and string/char literals replaced by spaces (newlines kept).
fn blank(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let keep_newlines = |out: &mut Vec<u8>, part: &[u8]| {
        out.extend(part.iter().map(|&c| if c == b'\n' { b'\n' } else { b' ' }))
    };
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            keep_newlines(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (0usize, 0);
            while j < rest.len() {
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            keep_newlines(&mut out, &rest[..j]);
            i += j;
        } else if let Some(len) = raw_string_len(rest) {
            keep_newlines(&mut out, &rest[..len]);
            i += len;
        } else if rest[0] == b'"' || rest.starts_with(b"b\"") {
            let mut j = if rest[0] == b'"' { 1 } else { 2 };
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(rest.len());
            keep_newlines(&mut out, &rest[..end]);
            i += end;
        } else if rest[0] == b'\'' {
            // A char literal ('x', '\n', '\u{1F600}'), or a lifetime ('a), left as is.
            let len = if rest.get(1) == Some(&b'\\') {
                rest[2..].iter().position(|&c| c == b'\'').map(|p| p + 3)
            } else {
                src[i + 1..]
                    .chars()
                    .next()
                    .map(|c| 1 + c.len_utf8())
                    .filter(|&n| rest.get(n) == Some(&b'\''))
                    .map(|n| n + 1)
            };
            match len {
                Some(len) => {
                    keep_newlines(&mut out, &rest[..len]);
                    i += len;
                }
                None => {
                    out.push(b'\'');
                    i += 1;
                }
            }
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The length of a raw string literal (`r"..."`, `r#"..."#`, `br#"..."#`) at the start.
fn raw_string_len(b: &[u8]) -> Option<usize> {
    let start = if b.starts_with(b"br") {
        2
    } else if b.starts_with(b"r") {
        1
    } else {
        return None;
    };
    let hashes = b[start..].iter().take_while(|&&c| c == b'#').count();
    if b.get(start + hashes) != Some(&b'"') {
        return None;
    }
    let mut close = vec![b'#'; hashes + 1];
    close[0] = b'"';
    let body = start + hashes + 1;
    let end = b[body..]
        .windows(close.len())
        .position(|w| w == close.as_slice())?;
    Some(body + end + close.len())
}

/// Blanked source without the items marked `#[cfg(test)]`.
fn strip_tests(src: &str) -> String {
    let mut b = src.as_bytes().to_vec();
    let marker = b"#[cfg(test)]";
    let mut from = 0;
    while let Some(pos) = b[from..].windows(marker.len()).position(|w| w == marker) {
        let start = from + pos;
        let mut i = start + marker.len();
        // Further attributes of the same item.
        loop {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if b[i..].starts_with(b"#[") {
                i = matching(&b, i + 1, b'[', b']');
            } else {
                break;
            }
        }
        // The item ends at its first `;` outside brackets, or with its first `{...}` block.
        let mut depth = 0i32;
        while i < b.len() {
            match b[i] {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                b';' if depth == 0 => {
                    i += 1;
                    break;
                }
                b'{' => {
                    i = matching(&b, i, b'{', b'}');
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        for c in &mut b[start..i.min(src.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
        from = i.min(b.len());
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// The index just past the bracket that closes the one at `open_at`.
fn matching(b: &[u8], open_at: usize, open: u8, close: u8) -> usize {
    let mut depth = 0;
    for (i, &c) in b.iter().enumerate().skip(open_at) {
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        }
    }
    b.len()
}

fn code_lines(stripped: &str) -> usize {
    stripped.lines().filter(|l| !l.trim().is_empty()).count()
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Punct(&'static str),
}

fn tokens(src: &str) -> Vec<(Tok, usize)> {
    let b = src.as_bytes();
    let (mut out, mut i, mut line) = (Vec::new(), 0, 1);
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Ident(src[start..i].to_string()), line));
        } else if b[i..].starts_with(b"::") {
            out.push((Tok::Punct("::"), line));
            i += 2;
        } else {
            let p = match c {
                b'{' => "{",
                b'}' => "}",
                b';' => ";",
                b',' => ",",
                b'*' => "*",
                b'(' => "(",
                b')' => ")",
                _ => "",
            };
            if !p.is_empty() {
                out.push((Tok::Punct(p), line));
            }
            i += 1;
        }
    }
    out
}

type ModPath = Vec<String>;

/// One `use` leaf: the path as written, the name it binds, and where it was written.
#[derive(Debug)]
struct UseLeaf {
    path: Vec<String>,
    name: String,
    module: ModPath,
    line: usize,
}

/// A path written in code, outside `use`, with the module it was written in.
#[derive(Debug)]
struct CodePath {
    path: Vec<String>,
    module: ModPath,
    line: usize,
}

#[derive(Debug, Default)]
struct FileFacts {
    uses: Vec<UseLeaf>,
    paths: Vec<CodePath>,
    code_lines: usize,
    opens_with_doc: bool,
}

struct Tree {
    /// Module path -> the file it lives in (inline modules live in their parent's file).
    modules: HashMap<ModPath, PathBuf>,
    /// Module path of each file.
    files: BTreeMap<PathBuf, ModPath>,
    facts: BTreeMap<PathBuf, FileFacts>,
}

#[derive(Debug)]
struct Cycle {
    files: Vec<PathBuf>,
    /// (from, line, path as written, to) for the edges inside the cycle.
    edges: Vec<(PathBuf, usize, String, PathBuf)>,
}

impl Cycle {
    fn render(&self, root: &Path) -> String {
        let mut s: String = self
            .files
            .iter()
            .map(|f| format!("  {}\n", rel(root, f)))
            .collect();
        s.push_str("  through:\n");
        for (from, line, written, to) in &self.edges {
            s.push_str(&format!(
                "    {}:{line} {written} -> {}\n",
                rel(root, from),
                rel(root, to)
            ));
        }
        s
    }
}

impl Tree {
    fn load(root_file: &Path) -> Tree {
        let mut tree = Tree {
            modules: HashMap::new(),
            files: BTreeMap::new(),
            facts: BTreeMap::new(),
        };
        tree.load_file(root_file, Vec::new());
        tree
    }

    fn load_file(&mut self, file: &Path, module: ModPath) {
        let text =
            fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let stripped = strip_tests(&blank(&text));
        self.modules.insert(module.clone(), file.to_path_buf());
        self.files.insert(file.to_path_buf(), module.clone());
        let toks = tokens(&stripped);
        let mut facts = FileFacts {
            code_lines: code_lines(&stripped),
            opens_with_doc: text.trim_start().starts_with("//!"),
            ..FileFacts::default()
        };
        // Directory holding this file's child module files.
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        let base = if matches!(stem.as_str(), "mod" | "lib" | "main") {
            file.parent().unwrap().to_path_buf()
        } else {
            file.parent().unwrap().join(&stem)
        };
        // (module path, brace depth at which it closes) of open inline modules.
        let mut inline: Vec<(ModPath, usize)> = Vec::new();
        let mut depth = 0usize;
        let mut children = Vec::new();
        let mut i = 0;
        let current = |inline: &Vec<(ModPath, usize)>| {
            inline
                .last()
                .map(|(m, _)| m.clone())
                .unwrap_or_else(|| module.clone())
        };
        while i < toks.len() {
            let (tok, line) = (&toks[i].0, toks[i].1);
            match tok {
                Tok::Punct("{") => depth += 1,
                Tok::Punct("}") => {
                    depth = depth.saturating_sub(1);
                    if inline.last().is_some_and(|(_, d)| *d == depth) {
                        inline.pop();
                    }
                }
                Tok::Ident(kw) if kw == "mod" => {
                    if let Some((Tok::Ident(name), _)) = toks.get(i + 1) {
                        let mut path = current(&inline);
                        path.push(name.clone());
                        match toks.get(i + 2).map(|t| &t.0) {
                            Some(Tok::Punct(";")) => {
                                let dir = inline
                                    .iter()
                                    .fold(base.clone(), |d, (m, _)| d.join(m.last().unwrap()));
                                children.push((dir, name.clone(), path));
                                i += 3;
                                continue;
                            }
                            Some(Tok::Punct("{")) => {
                                self.modules.insert(path.clone(), file.to_path_buf());
                                inline.push((path, depth));
                                depth += 1;
                                i += 3;
                                continue;
                            }
                            _ => {}
                        }
                    }
                }
                Tok::Ident(kw) if kw == "use" => {
                    let module_now = current(&inline);
                    let mut j = i + 1;
                    let mut leaves = Vec::new();
                    parse_use_tree(&toks, &mut j, Vec::new(), &mut leaves);
                    for (path, name) in leaves {
                        facts.uses.push(UseLeaf {
                            path,
                            name,
                            module: module_now.clone(),
                            line,
                        });
                    }
                    i = j;
                    continue;
                }
                Tok::Ident(first) => {
                    let after_sep = i > 0 && toks[i - 1].0 == Tok::Punct("::");
                    if !after_sep && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Punct("::")) {
                        let mut path = vec![first.clone()];
                        let mut j = i + 2;
                        while let Some((Tok::Ident(seg), _)) = toks.get(j) {
                            path.push(seg.clone());
                            if toks.get(j + 1).map(|t| &t.0) == Some(&Tok::Punct("::")) {
                                j += 2;
                            } else {
                                j += 1;
                                break;
                            }
                        }
                        facts.paths.push(CodePath {
                            path,
                            module: current(&inline),
                            line,
                        });
                        i = j;
                        continue;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        self.facts.insert(file.to_path_buf(), facts);
        for (dir, name, path) in children {
            let flat = dir.join(format!("{name}.rs"));
            let nested = dir.join(&name).join("mod.rs");
            let child = if flat.exists() { flat } else { nested };
            if child.exists() {
                self.load_file(&child, path);
            }
        }
    }

    /// The file a path written in `module` points at, following imports and re-exports.
    fn resolve(&self, module: &ModPath, path: &[String], hops: usize) -> Option<PathBuf> {
        let mut at: ModPath = match path.first()?.as_str() {
            "crate" => Vec::new(),
            "self" => module.clone(),
            "super" => {
                let mut m = module.clone();
                m.pop();
                m
            }
            name => {
                let mut child = module.clone();
                child.push(name.to_string());
                if self.modules.contains_key(&child) {
                    child
                } else {
                    // A name imported into this module: follow the import.
                    let file = self.modules.get(module)?;
                    let leaf = self.facts[file]
                        .uses
                        .iter()
                        .find(|u| &u.module == module && u.name == name)?;
                    if hops == 0 {
                        return None;
                    }
                    let mut full = leaf.path.clone();
                    full.extend(path[1..].iter().cloned());
                    return self.resolve(&leaf.module, &full, hops - 1);
                }
            }
        };
        let mut rest = &path[1..];
        while let Some(seg) = rest.first() {
            match seg.as_str() {
                "super" => {
                    at.pop();
                }
                "self" => {}
                _ => {
                    let mut next = at.clone();
                    next.push(seg.clone());
                    if !self.modules.contains_key(&next) {
                        break;
                    }
                    at = next;
                }
            }
            rest = &rest[1..];
        }
        let file = self.modules.get(&at)?.clone();
        // An item this module imports from elsewhere lives where the import points.
        if let (Some(item), true) = (rest.first(), hops > 0) {
            let imported = self.facts[&file]
                .uses
                .iter()
                .find(|u| u.module == at && &u.name == item);
            if let Some(leaf) = imported {
                let mut full = leaf.path.clone();
                full.extend(rest[1..].iter().cloned());
                if let Some(target) = self.resolve(&leaf.module, &full, hops - 1) {
                    return Some(target);
                }
            }
        }
        Some(file)
    }

    /// Edges between files: (from, line, path as written, to).
    fn edges(&self) -> Vec<(PathBuf, usize, String, PathBuf)> {
        let mut edges = Vec::new();
        for (file, facts) in &self.facts {
            let written = facts
                .uses
                .iter()
                .map(|u| (&u.module, &u.path, u.line))
                .chain(facts.paths.iter().map(|p| (&p.module, &p.path, p.line)));
            for (module, path, line) in written {
                let Some(to) = self.resolve(module, path, 8) else {
                    continue;
                };
                if &to == file || self.is_ancestor_file(file, &to) {
                    continue;
                }
                edges.push((file.clone(), line, path.join("::"), to));
            }
        }
        edges
    }

    /// True when `to` holds a module that contains `from`'s module.
    fn is_ancestor_file(&self, from: &Path, to: &Path) -> bool {
        let (Some(a), Some(b)) = (self.files.get(from), self.files.get(to)) else {
            return false;
        };
        b.len() < a.len() && a.starts_with(b)
    }

    /// Strongly connected sets of more than one file (Tarjan).
    fn cycles(&self) -> Vec<Cycle> {
        let edges = self.edges();
        let names: Vec<&PathBuf> = self.files.keys().collect();
        let index_of: HashMap<&PathBuf, usize> =
            names.iter().enumerate().map(|(i, f)| (*f, i)).collect();
        let mut adj = vec![BTreeSet::new(); names.len()];
        for (from, _, _, to) in &edges {
            adj[index_of[from]].insert(index_of[to]);
        }
        let sccs = tarjan(&adj);
        sccs.into_iter()
            .filter(|c| c.len() > 1)
            .map(|members| {
                let set: BTreeSet<usize> = members.iter().copied().collect();
                let mut files: Vec<PathBuf> = members.iter().map(|&i| names[i].clone()).collect();
                files.sort();
                // The first place each pair of files is joined is enough to name it.
                let mut seen = BTreeSet::new();
                let edges = edges
                    .iter()
                    .filter(|(f, _, _, t)| set.contains(&index_of[f]) && set.contains(&index_of[t]))
                    .filter(|(f, _, _, t)| seen.insert((f.clone(), t.clone())))
                    .cloned()
                    .collect();
                Cycle { files, edges }
            })
            .collect()
    }

    /// Module names (file modules; test modules aside) used more than once in the crate.
    fn duplicate_names(&self) -> Vec<(String, Vec<PathBuf>)> {
        let mut by_name: BTreeMap<&str, Vec<PathBuf>> = BTreeMap::new();
        for (file, module) in &self.files {
            if let Some(name) = module.last() {
                by_name.entry(name.as_str()).or_default().push(file.clone());
            }
        }
        by_name
            .into_iter()
            .filter(|(_, files)| files.len() > 1)
            .map(|(name, files)| (name.to_string(), files))
            .collect()
    }

    fn undocumented_files(&self) -> Vec<PathBuf> {
        self.facts
            .iter()
            .filter(|(_, f)| !f.opens_with_doc)
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn long_files(&self) -> Vec<(PathBuf, usize)> {
        self.facts
            .iter()
            .filter(|(_, f)| f.code_lines > MAX_CODE_LINES)
            .map(|(p, f)| (p.clone(), f.code_lines))
            .collect()
    }
}

/// Parses one use tree starting at `toks[*j]`, up to and including its `;` (at the top).
fn parse_use_tree(
    toks: &[(Tok, usize)],
    j: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, String)>,
) {
    let mut path = prefix;
    loop {
        match toks.get(*j).map(|t| &t.0) {
            Some(Tok::Ident(seg)) if seg == "as" => {
                *j += 1;
                if let Some((Tok::Ident(alias), _)) = toks.get(*j) {
                    *j += 1;
                    if let Some(last) = path.last() {
                        let name = if alias == "_" {
                            format!("_{last}")
                        } else {
                            alias.clone()
                        };
                        out.push((path.clone(), name));
                    }
                }
                return finish(toks, j);
            }
            Some(Tok::Ident(seg)) => {
                path.push(seg.clone());
                *j += 1;
                if toks.get(*j).map(|t| &t.0) == Some(&Tok::Punct("::")) {
                    *j += 1;
                    continue;
                }
                let name = if seg == "self" {
                    path.pop();
                    path.last().cloned().unwrap_or_default()
                } else {
                    seg.clone()
                };
                out.push((path, name));
                return finish(toks, j);
            }
            Some(Tok::Punct("*")) => {
                *j += 1;
                out.push((path, "*".into()));
                return finish(toks, j);
            }
            Some(Tok::Punct("{")) => {
                *j += 1;
                loop {
                    match toks.get(*j).map(|t| &t.0) {
                        Some(Tok::Punct("}")) => {
                            *j += 1;
                            break;
                        }
                        Some(Tok::Punct(",")) => *j += 1,
                        None => return,
                        _ => parse_use_tree(toks, j, path.clone(), out),
                    }
                }
                return finish(toks, j);
            }
            _ => return finish(toks, j),
        }
    }
}

/// After a use tree: steps over a closing `;` (a top-level tree) and leaves `,`/`}`.
fn finish(toks: &[(Tok, usize)], j: &mut usize) {
    if toks.get(*j).map(|t| &t.0) == Some(&Tok::Punct(";")) {
        *j += 1;
    }
}

fn tarjan(adj: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        adj: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in s.adj[v].clone().iter() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                scc.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(scc);
        }
    }
    let n = adj.len();
    let mut s = State {
        adj,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}
