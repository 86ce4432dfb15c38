//! Lists the message catalogues in `messages/` so that adding a language is adding a file: the
//! generated `$OUT_DIR/messages.rs` holds one `(code, include_str!(…))` pair per
//! `messages/<code>.toml`, sorted by code, and the binary stays self-contained.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=messages");
    let dir = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("messages");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|x| x == "toml"))
        .map(|path| {
            let code = path.file_stem().unwrap().to_str().expect("catalogue names are UTF-8").to_string();
            (code, path.to_str().expect("paths are UTF-8").to_string())
        })
        .collect();
    files.sort();
    let mut out =
        String::from("/// Every `messages/<code>.toml`, found at build time.\nconst SOURCES: &[(&str, &str)] = &[\n");
    for (code, path) in &files {
        out.push_str(&format!("    ({code:?}, include_str!({path:?})),\n"));
    }
    out.push_str("];\n");
    let target = Path::new(&std::env::var("OUT_DIR").unwrap()).join("messages.rs");
    std::fs::write(target, out).unwrap();
}
