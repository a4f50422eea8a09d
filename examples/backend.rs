//! A backend beside threadcast: it mints each user's token, and pushes to one user.
//!
//! ```sh
//! export THREADCAST_JWT_SECRET=...    # the server's --jwt-secret (at least 32 bytes)
//! export THREADCAST_ADMIN_TOKEN=...   # the server's --admin-token
//! cargo run --example backend -- token alice "Alice A."   # prints a token for alice
//! cargo run --example backend -- push alice "your order shipped"
//! ```
//! `THREADCAST_URL` is the server (default `http://127.0.0.1:8080`).
//!
//! Your application already knows who its users are (they logged in to it). To let one
//! of them into threadcast, it hands their page a *signed token*: a JWT (RFC 7519) that
//! says who they are (`sub`), until when (`exp`), and which rooms they may use, signed
//! with the secret it shares with threadcast (HMAC-SHA256, "HS256"). threadcast checks
//! the signature and believes the claims; it never sees your users' passwords. To push
//! to one user, the backend publishes into their personal room `@<sub>` with the
//! operator's token — only that user's connections can read it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use data_encoding::BASE64URL_NOPAD;

/// How long a token is good for. The page asks for a new one when it runs out (the
/// server closes its connection with 4001).
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// A signed token for user `sub`, shown as `name`: header `.` claims `.` signature,
/// each in base64url without padding.
fn mint(secret: &[u8], sub: &str, name: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let exp = (now + TOKEN_LIFETIME).as_secs();
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    // The user may read their own room (always) and the lobby, and write in the lobby.
    let claims = format!(
        r#"{{"sub":{},"name":{},"exp":{exp},"rooms":["lobby"],"publish":["lobby"]}}"#,
        json_string(sub),
        json_string(name)
    );
    let signed = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.as_bytes()),
        BASE64URL_NOPAD.encode(claims.as_bytes())
    );
    let signature = hmac_sha256::HMAC::mac(signed.as_bytes(), secret);
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}

/// `s` as a JSON string (quotes, backslashes and control characters escaped).
fn json_string(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `POST /publish/@<sub>` with the operator's token; returns the server's answer.
fn push(server: &str, admin: &str, sub: &str, message: &str) -> std::io::Result<String> {
    let host = server.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(host)?;
    let request = format!(
        "POST /publish/@{sub} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {admin}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{message}",
        message.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = |name: &str| std::env::var(name).map_err(|_| format!("set {name}"));
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["token", sub, ref name @ ..] => {
            let secret = env("THREADCAST_JWT_SECRET")?;
            println!(
                "{}",
                mint(secret.as_bytes(), sub, name.first().unwrap_or(&sub))
            );
        }
        ["push", sub, message] => {
            let server = env("THREADCAST_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
            let answer = push(&server, &env("THREADCAST_ADMIN_TOKEN")?, sub, message)?;
            // The status line and the JSON body: `202` and the message's id.
            let status = answer.lines().next().unwrap_or("");
            let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
            println!("{status}\n{body}");
        }
        _ => return Err("usage: backend token SUB [NAME] | backend push SUB MESSAGE".into()),
    }
    Ok(())
}
