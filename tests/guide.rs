//! The guide (`guide/src/`, an mdBook) holds together: every chapter in the summary
//! exists and every file there is in the summary, every relative link, image and
//! include points at a file (and a heading, for `#anchor` links), every figure is
//! used, every `cargo run --example` names an example that exists, and every
//! chapter ends in what the reader should see. Its Rust blocks run as doc-tests
//! (`src/guide.rs`); `mdbook build guide` renders it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn guide() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guide/src")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// The chapter files named in SUMMARY.md, in order.
fn chapters() -> Vec<String> {
    let summary = read(&guide().join("SUMMARY.md"));
    targets(&summary).into_iter().filter(|t| t.ends_with(".md")).collect()
}

/// The targets of markdown links and images, `](target)`, outside code blocks.
fn targets(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let tail = &rest[i + 2..];
            let Some(j) = tail.find(')') else { break };
            out.push(tail[..j].trim().to_string());
            rest = &tail[j..];
        }
    }
    out
}

/// GitHub/mdBook heading ids of a chapter: lower case, spaces to `-`, other
/// punctuation dropped.
fn anchors(md: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let id: String = title
            .chars()
            .filter_map(|c| match c {
                c if c.is_alphanumeric() => Some(c.to_ascii_lowercase()),
                ' ' | '-' => Some('-'),
                '_' => Some('_'),
                _ => None,
            })
            .collect();
        out.insert(id);
    }
    out
}

#[test]
fn summary_and_chapter_files_agree() {
    let listed: BTreeSet<String> = chapters().into_iter().collect();
    assert!(listed.len() >= 10, "the summary lists {} chapters", listed.len());
    for c in &listed {
        assert!(guide().join(c).is_file(), "SUMMARY.md lists {c}, which does not exist");
    }
    for entry in std::fs::read_dir(guide()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if name.ends_with(".md") && name != "SUMMARY.md" {
            assert!(listed.contains(&name), "guide/src/{name} is not in SUMMARY.md");
        }
    }
}

#[test]
fn links_images_and_includes_resolve() {
    let root = guide();
    let mut used_figures = BTreeSet::new();
    let mut checked = 0;
    for c in chapters() {
        let path = root.join(&c);
        let md = read(&path);
        for t in targets(&md) {
            if t.starts_with("http://") || t.starts_with("https://") || t.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = match t.split_once('#') {
                Some((f, a)) => (f.to_string(), Some(a.to_string())),
                None => (t.clone(), None),
            };
            let target = if file.is_empty() {
                path.clone()
            } else {
                root.join(&file)
            };
            assert!(target.exists(), "{c}: link to {t}: {} does not exist", target.display());
            if let Some(a) = anchor {
                let ids = anchors(&read(&target));
                assert!(
                    ids.contains(&a),
                    "{c}: link to {t}: no heading with id {a:?} (have {ids:?})"
                );
            }
            if file.starts_with("img/") {
                used_figures.insert(file.clone());
            }
            checked += 1;
        }
        for (i, _) in md.match_indices("{{#include ") {
            let rest = &md[i + "{{#include ".len()..];
            let end = rest.find("}}").unwrap_or_else(|| panic!("{c}: unterminated include"));
            let spec = rest[..end].trim();
            let file = spec.split(':').next().unwrap();
            assert!(root.join(file).is_file(), "{c}: include of {spec}: no such file");
            checked += 1;
        }
    }
    for entry in std::fs::read_dir(root.join("img")).unwrap() {
        let name = format!("img/{}", entry.unwrap().file_name().to_string_lossy());
        assert!(
            used_figures.contains(&name),
            "guide/src/{name} is not shown by any chapter"
        );
    }
    assert!(checked > 0, "no links checked");
}

#[test]
fn every_example_command_names_an_example() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for c in chapters() {
        let md = read(&guide().join(&c));
        for (i, _) in md.match_indices("--example ") {
            let name: String = md[i + "--example ".len()..]
                .chars()
                .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
                .collect();
            assert!(
                examples.join(format!("{name}.rs")).is_file() || examples.join(&name).join("main.rs").is_file(),
                "{c}: `--example {name}`: no such example"
            );
            seen += 1;
        }
    }
    assert!(seen > 0, "the guide runs no example");
}

#[test]
fn every_chapter_ends_in_what_the_reader_should_see() {
    for c in chapters().into_iter().filter(|c| c != "introduction.md") {
        let md = read(&guide().join(&c));
        assert!(
            md.lines().any(|l| l.starts_with("## What you should see")),
            "{c} has no \"## What you should see\" section"
        );
    }
}
