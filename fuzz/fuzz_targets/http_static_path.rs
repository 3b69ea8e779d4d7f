//! Any request path given to the HTTP server's static-folder resolver
//! (`pinhole_server::http::resolve_static`) names a file inside the folder or nothing:
//! never a panic, never a file outside the folder, through `..`, escapes, absolute paths,
//! backslashes, NUL or a symlink that points out.
//!
//! The folder (made once per process): `www/index.html`, `www/assets/app.js`,
//! `www/sub/index.html`, `www/out -> ../secret` (a symlink leaving the folder) and
//! `www-evil/x` and `secret/passwd` beside it.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;
use pinhole_server::http::resolve_static;

struct Tree {
    root: PathBuf,
    canonical_root: PathBuf,
}

fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| {
        let top = scratch::folder("http");
        let root = top.join("www");
        for dir in ["www/assets", "www/sub", "www-evil", "secret"] {
            std::fs::create_dir_all(top.join(dir)).expect("fuzz folder");
        }
        for (file, text) in [
            ("www/index.html", "<html></html>"),
            ("www/assets/app.js", "//"),
            ("www/sub/index.html", "<html></html>"),
            ("www-evil/x", "outside"),
            ("secret/passwd", "outside"),
        ] {
            std::fs::write(top.join(file), text).expect("fuzz file");
        }
        #[cfg(unix)]
        {
            let _ = std::os::unix::fs::symlink("../secret", root.join("out"));
        }
        let canonical_root = std::fs::canonicalize(&root).expect("canonical root");
        Tree {
            root,
            canonical_root,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = std::str::from_utf8(data) else {
        return;
    };
    let tree = tree();
    if let Some(path) = resolve_static(&tree.root, request) {
        assert!(
            path.starts_with(&tree.canonical_root),
            "{request:?} resolved outside the static folder: {path:?}"
        );
        assert!(
            path.is_file(),
            "{request:?} resolved to a non-file {path:?}"
        );
    }
});
