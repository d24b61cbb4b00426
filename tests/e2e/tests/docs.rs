//! docs/architecture.md names the function and the test behind each rule of the specification;
//! these tests keep those names true to the tree, so that a rename or a move fails here with the
//! reference to fix. No server needed.
//!
//! Two kinds of references are checked, each a whole inline code span of the page (fenced blocks
//! are diagrams and are skipped):
//!
//! - a test, `path/to/file.rs::name` (or `file.rs::tests::name` for a unit test): the file exists
//!   under the workspace root, declares the modules on the way (`mod tests`) and `fn name`;
//! - an item, `crate_name::module::Type::function`: `crate_name` is a workspace member (its
//!   `[package]` name with `_` for `-`), each module segment is a file or a `mod` of that crate's
//!   `src/`, each type segment a declared struct, enum, trait or type alias, and the last segment
//!   a `fn` (lower case), a type (`CamelCase`) or a constant (`UPPER_CASE`) there. A name that
//!   starts with `cloudkit` but is no workspace crate is an error too; other crates
//!   (`kube_lease_manager`, ...) are not checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cloudkit_test_support::workspace_root;

const PAGE: &str = "docs/architecture.md";

const TYPE_KEYWORDS: &[&str] = &["struct", "enum", "trait", "type", "union"];

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The inline code spans of a Markdown text, outside fenced blocks.
fn code_spans(markdown: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut spans = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            spans.extend(line.split('`').skip(1).step_by(2));
        }
    }
    spans
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn is_ident(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') && s.chars().all(is_ident_char)
}

#[derive(Debug, PartialEq)]
enum Reference<'a> {
    /// `path/to/file.rs::module::test`: the file, then the path inside it.
    Test { file: &'a str, path: Vec<&'a str> },
    /// `crate_name::module::Type::item`: the crate, then the path inside it.
    Item { krate: &'a str, path: Vec<&'a str> },
}

fn parse(span: &str) -> Option<Reference<'_>> {
    if let Some(at) = span.find(".rs::") {
        let file = &span[..at + 3];
        let path: Vec<&str> = span[at + 5..].split("::").collect();
        let file_ok = file
            .chars()
            .all(|c| is_ident_char(c) || matches!(c, '-' | '.' | '/'));
        return (file_ok && path.iter().all(|s| is_ident(s)))
            .then_some(Reference::Test { file, path });
    }
    let mut segments = span.split("::");
    let krate = segments.next()?;
    let path: Vec<&str> = segments.collect();
    let crate_like = is_ident(krate) && !krate.chars().any(|c| c.is_ascii_uppercase());
    (crate_like && !path.is_empty() && path.iter().all(|s| is_ident(s)))
        .then_some(Reference::Item { krate, path })
}

/// Whether `source` declares `name` after one of `keywords` (`fn name`, `pub(crate) async fn
/// name`, `struct Name`, ...).
fn declares(source: &str, keywords: &[&str], name: &str) -> bool {
    keywords.iter().any(|keyword| {
        let needle = format!("{keyword} {name}");
        source.match_indices(&needle).any(|(at, _)| {
            let before = source[..at].chars().next_back();
            let after = source[at + needle.len()..].chars().next();
            !before.is_some_and(is_ident_char) && !after.is_some_and(is_ident_char)
        })
    })
}

/// The value of `name = "..."` in the `[section]` of a Cargo manifest.
fn manifest_name(manifest: &str, section: &str) -> Option<String> {
    let header = format!("{section}]");
    let body = manifest
        .split("\n[")
        .find(|s| s.trim_start_matches('[').starts_with(&header))?;
    body.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "name").then(|| value.trim().trim_matches('"').to_string())
    })
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The workspace as the references see it.
struct Tree {
    root: PathBuf,
    /// Crate names as Rust spells them (`cloudkit_api`) -> the member's directory.
    crates: BTreeMap<String, PathBuf>,
    /// The text of every `.rs` file under a member's `src/`.
    sources: BTreeMap<PathBuf, String>,
}

impl Tree {
    fn load(root: &Path) -> Self {
        let manifest = read(&root.join("Cargo.toml"));
        let members = manifest
            .split_once("members")
            .and_then(|(_, rest)| rest.split_once('['))
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(list, _)| list)
            .expect("the workspace manifest lists its members");
        let mut crates = BTreeMap::new();
        let mut sources = BTreeMap::new();
        for member in members.split('"').skip(1).step_by(2) {
            let dir = root.join(member);
            let member_manifest = read(&dir.join("Cargo.toml"));
            let name = manifest_name(&member_manifest, "lib")
                .or_else(|| manifest_name(&member_manifest, "package"))
                .unwrap_or_else(|| panic!("{member}/Cargo.toml has no [package] name"));
            for file in rust_files(&dir.join("src")) {
                let text = read(&file);
                sources.insert(file, text);
            }
            crates.insert(name.replace('-', "_"), dir);
        }
        assert!(crates.len() > 5, "workspace members: {crates:?}");
        Tree {
            root: root.to_path_buf(),
            crates,
            sources,
        }
    }

    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    fn check_test(&self, file: &str, path: &[&str]) -> Result<(), String> {
        let full = self.root.join(file);
        if !full.is_file() {
            return Err(format!(
                "{file} does not exist; point the reference at the file the test lives in now"
            ));
        }
        let source = read(&full);
        let (name, modules) = path.split_last().expect("a test path has a name");
        if let Some(module) = modules.iter().find(|m| !declares(&source, &["mod"], m)) {
            return Err(format!(
                "{file} has no `mod {module}`; fix the path to the test"
            ));
        }
        if !declares(&source, &["fn"], name) {
            return Err(format!(
                "{file} has no `fn {name}`; use the test's current name, or the file it moved to"
            ));
        }
        Ok(())
    }

    fn check_item(&self, krate: &str, path: &[&str]) -> Result<(), String> {
        let Some(dir) = self.crates.get(krate) else {
            return Err(format!(
                "no workspace crate is named {krate} (the crates: {}); name one of them",
                self.crates.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        };
        let mut module_dir = dir.join("src");
        let mut scope = rust_files(&module_dir);
        // Where the item is looked for, for the messages.
        let mut place = format!("{}/", self.relative(&module_dir));
        let declared = |scope: &[PathBuf], keywords: &[&str], name: &str| {
            scope.iter().any(|f| {
                self.sources
                    .get(f)
                    .is_some_and(|s| declares(s, keywords, name))
            })
        };
        let (last, parents) = path.split_last().expect("an item path has a name");
        for segment in parents {
            if segment.starts_with(|c: char| c.is_ascii_uppercase()) {
                if !declared(&scope, TYPE_KEYWORDS, segment) {
                    return Err(format!(
                        "no struct, enum, trait or type `{segment}` in {place}; rename the type in \
                         the reference"
                    ));
                }
                continue;
            }
            let file = [
                module_dir.join(format!("{segment}.rs")),
                module_dir.join(segment).join("mod.rs"),
            ]
            .into_iter()
            .find(|f| f.is_file());
            if let Some(file) = file {
                place = self.relative(&file);
                module_dir = module_dir.join(segment);
                scope = std::iter::once(file)
                    .chain(rust_files(&module_dir))
                    .collect();
                continue;
            }
            let inline: Vec<PathBuf> = scope
                .iter()
                .filter(|f| declared(std::slice::from_ref(f), &["mod"], segment))
                .cloned()
                .collect();
            if inline.is_empty() {
                return Err(format!(
                    "no module `{segment}` in {place}; name the module the item lives in now"
                ));
            }
            place = format!("`mod {segment}` of {place}");
            scope = inline;
        }
        let (keywords, what): (&[&str], _) = if last.chars().all(|c| !c.is_ascii_lowercase()) {
            (&["const", "static"], "constant")
        } else if last.starts_with(|c: char| c.is_ascii_uppercase()) {
            (TYPE_KEYWORDS, "type")
        } else {
            (&["fn"], "function")
        };
        if !declared(&scope, keywords, last) {
            let hint = if what == "function" {
                " (a module is named by its file path or by an item in it)"
            } else {
                ""
            };
            return Err(format!(
                "no {what} `{last}` in {place}; use its current name and module{hint}"
            ));
        }
        Ok(())
    }

    /// Checks every reference of `markdown`: (tests checked, items checked, problems).
    fn check(&self, markdown: &str) -> (usize, usize, Vec<String>) {
        let (mut tests, mut items, mut problems) = (0, 0, Vec::new());
        for span in code_spans(markdown) {
            let result = match parse(span) {
                Some(Reference::Test { file, path }) => {
                    tests += 1;
                    self.check_test(file, &path)
                }
                Some(Reference::Item { krate, path })
                    if self.crates.contains_key(krate) || krate.starts_with("cloudkit") =>
                {
                    items += 1;
                    self.check_item(krate, &path)
                }
                _ => Ok(()),
            };
            if let Err(problem) = result {
                problems.push(format!("`{span}`: {problem}"));
            }
        }
        (tests, items, problems)
    }
}

#[test]
fn every_function_and_test_the_architecture_page_names_exists() {
    let tree = Tree::load(&workspace_root());
    let (tests, items, problems) = tree.check(&read(&tree.root.join(PAGE)));
    assert!(
        problems.is_empty(),
        "{PAGE} names {} things the tree does not have; rename or move each reference in {PAGE} \
         to where the code is now:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    // The rule map names about two hundred of each; far fewer means the page is no longer read
    // the way this test expects.
    assert!(
        tests > 100 && items > 100,
        "only {tests} test and {items} item references found in {PAGE}: are they still written as \
         `path/to/file.rs::test` and `crate_name::module::function` inside backticks?"
    );
}

#[test]
fn a_name_that_is_gone_is_reported() {
    let tree = Tree::load(&workspace_root());
    let page = "\
| `cloudkit_reconciler::decide::decide` | `crates/cloudkit-reconciler/tests/decide.rs::unmanaged_does_nothing_at_all` |
| `cloudkit_reconciler::decide::Gone::launch` | `crates/cloudkit-reconciler/src/decide.rs::tests::unmanaged_does_nothing_at_all` |
| `cloudkit_reconciler::nowhere::decide` | `cloudkit_reconciler::decide::gone` | `cloudkit_reconciler::messages::reason::GONE` |
| `cloudkit_gone::decide` | `crates/cloudkit-reconciler/tests/gone.rs::unmanaged_does_nothing_at_all` |
| `cloudkit_reconciler::messages::reason::APPLIED` | `cloudkit_reconciler::plan::Plan::status_write` | `kube_lease_manager::LeaseManager` |
```
`cloudkit_reconciler::decide::gone` in a fence is a diagram
```
";
    let (tests, items, problems) = tree.check(page);
    assert_eq!((tests, items), (3, 8), "{problems:#?}");
    let named: Vec<&str> = problems
        .iter()
        .map(|p| p.split('`').nth(1).unwrap_or_default())
        .collect();
    assert_eq!(
        named,
        [
            "cloudkit_reconciler::decide::Gone::launch",
            "crates/cloudkit-reconciler/src/decide.rs::tests::unmanaged_does_nothing_at_all",
            "cloudkit_reconciler::nowhere::decide",
            "cloudkit_reconciler::decide::gone",
            "cloudkit_reconciler::messages::reason::GONE",
            "cloudkit_gone::decide",
            "crates/cloudkit-reconciler/tests/gone.rs::unmanaged_does_nothing_at_all",
        ],
        "{problems:#?}"
    );
}
