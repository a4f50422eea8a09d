//! Signed tokens made by an independent implementation of HS256 JWTs: Python's
//! standard library (hmac, hashlib, base64, json), so the server's verifier is checked
//! against code it shares nothing with.

/// The secret test servers are started with (`--jwt-secret`).
pub const SECRET: &str = "the-server-secret-of-at-least-32-bytes";

/// The operator's token in tests (`--admin-token`).
pub const ADMIN: &str = "the-operator-token";

/// A token with these `claims` (a JSON object, without `exp`), valid for
/// `ttl_secs` seconds from now (negative: already expired), signed with [`SECRET`].
pub fn mint(claims: &str, ttl_secs: i64) -> String {
    const SCRIPT: &str = r#"
import base64, hashlib, hmac, json, sys, time
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
claims = json.loads(sys.argv[2]); claims["exp"] = int(time.time()) + int(sys.argv[3])
h = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()); p = b64(json.dumps(claims).encode())
print(h + "." + p + "." + b64(hmac.new(sys.argv[1].encode(), (h + "." + p).encode(), hashlib.sha256).digest()))
"#;
    let output = std::process::Command::new("python3")
        .args(["-c", SCRIPT, SECRET, claims, &ttl_secs.to_string()])
        .output()
        .expect("python3 runs (the test command installs it)");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}
