//! The VPN's credentials: a lab CA and a server certificate with the server's IP as
//! subject alternative name (certtool, ECDSA: instant to generate), the SPKI pin the
//! client checks with `--servercert pin-sha256:…`, and an ocserv password file made
//! with ocpasswd.

use std::{
    io,
    path::{Path, PathBuf},
    process::Command,
};

use super::netns::run;

/// The VPN user.
pub const VPN_USER: &str = "labuser";
/// Its password (a lab-only credential: the files live in the run's temp dir).
pub const VPN_PASSWORD: &str = "pathwatch-lab";

/// Files and pin of the lab PKI.
pub struct Pki {
    /// CA certificate (PEM).
    pub ca: PathBuf,
    /// Server certificate (PEM), SAN = the server's IP.
    pub cert: PathBuf,
    /// Server key (PEM).
    pub key: PathBuf,
    /// `pin-sha256:<base64>` of the server key's SubjectPublicKeyInfo.
    pub pin: String,
    /// ocserv password file with [`VPN_USER`].
    pub passwd: PathBuf,
}

fn certtool(args: &[&str]) -> io::Result<String> {
    let out = run(Command::new("certtool").args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Pki {
    /// Creates the CA, the server certificate for `server_ip` and the password file in `dir`.
    pub fn create(dir: &Path, server_ip: &str) -> io::Result<Pki> {
        let p = |n: &str| dir.join(n);
        let s = |p: &Path| p.to_string_lossy().into_owned();
        std::fs::write(
            p("ca.tmpl"),
            "cn = \"pathwatch lab CA\"\norganization = \"pathwatch lab\"\nca\ncert_signing_key\nexpiration_days = 2\n",
        )?;
        std::fs::write(
            p("server.tmpl"),
            format!(
                "cn = \"{server_ip}\"\norganization = \"pathwatch lab\"\nip_address = \"{server_ip}\"\n\
                 tls_www_server\nsigning_key\nencryption_key\nexpiration_days = 2\n"
            ),
        )?;
        let (ca_key, ca, key, cert) = (p("ca-key.pem"), p("ca.pem"), p("server-key.pem"), p("server.pem"));
        certtool(&["--generate-privkey", "--key-type=ecdsa", "--outfile", &s(&ca_key)])?;
        certtool(&[
            "--generate-self-signed",
            "--load-privkey",
            &s(&ca_key),
            "--template",
            &s(&p("ca.tmpl")),
            "--outfile",
            &s(&ca),
        ])?;
        certtool(&["--generate-privkey", "--key-type=ecdsa", "--outfile", &s(&key)])?;
        certtool(&[
            "--generate-certificate",
            "--load-privkey",
            &s(&key),
            "--load-ca-certificate",
            &s(&ca),
            "--load-ca-privkey",
            &s(&ca_key),
            "--template",
            &s(&p("server.tmpl")),
            "--outfile",
            &s(&cert),
        ])?;
        let info = certtool(&["--certificate-info", "--infile", &s(&cert)])?;
        let pin = info
            .split_whitespace()
            .find(|w| w.starts_with("pin-sha256:"))
            .map(str::to_string)
            .ok_or_else(|| io::Error::other("certtool --certificate-info printed no pin-sha256"))?;
        let passwd = p("ocpasswd");
        let mut c = Command::new("ocpasswd");
        c.args(["-c", &s(&passwd), VPN_USER]);
        let out = {
            use std::io::Write;
            let mut child = c
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| io::Error::new(e.kind(), format!("ocpasswd: {e}")))?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(format!("{VPN_PASSWORD}\n{VPN_PASSWORD}\n").as_bytes())?;
            }
            child.wait_with_output()?
        };
        if !out.status.success() || !std::fs::read_to_string(&passwd).unwrap_or_default().starts_with(VPN_USER) {
            return Err(io::Error::other(format!("ocpasswd failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        Ok(Pki { ca, cert, key, pin, passwd })
    }
}
