//! The committed `openapi.json` must match what the code generates.

#[test]
fn committed_openapi_document_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = contact_runtime::http::openapi::openapi_json();
    assert!(
        committed == generated,
        "tenant-runtime/openapi.json is out of date; regenerate it with\n  cargo run -p contact-runtime -- openapi > tenant-runtime/openapi.json"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(doc["info"]["version"], "v1");
    assert!(doc["paths"]["/api/v1/conversations"]["get"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}
