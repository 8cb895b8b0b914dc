//! The README's op support table is generated from the registry; this fails when it is stale.
//! Regenerate with `ALEMBIC_UPDATE_README=1 cargo test --test integration readme`.

const BEGIN: &str = "<!-- ops:begin (generated: ALEMBIC_UPDATE_README=1 cargo test --test integration readme) -->\n";
const END: &str = "<!-- ops:end -->";

#[test]
fn readme_op_table_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let table = alembic::onnx::registry().markdown_table();
    let (Some(b), Some(e)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("README.md lacks the op table markers {BEGIN:?} ... {END:?}");
    };
    let current = &readme[b + BEGIN.len()..e];
    if current != table {
        if std::env::var_os("ALEMBIC_UPDATE_README").is_some() {
            let updated = format!("{}{table}{}", &readme[..b + BEGIN.len()], &readme[e..]);
            std::fs::write(&path, updated).expect("write README.md");
            return;
        }
        panic!("README.md op table is stale: run ALEMBIC_UPDATE_README=1 cargo test --test integration readme");
    }
}
