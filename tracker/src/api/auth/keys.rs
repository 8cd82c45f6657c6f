//! API keys: generating them, hashing them, and finding the key a presented token belongs
//! to, from `auth.api_keys` and from `auth.api_keys_file` (re-read when it changes).
//!
//! Only `sha256:<hex>` digests are ever held. The tokens are 32 random bytes from the
//! operating system, so an unsalted, fast SHA-256 is enough: salting and key stretching exist
//! to protect guessable secrets such as passwords, and 2^256 possibilities are not guessable.
//! A presented token is hashed once and compared with *every* configured digest in constant
//! time, so neither the comparison nor the position of the matching key shows in the timing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use figment::providers::{Format, Toml};
use figment::Figment;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::config::{
    valid_key_name, validate_api_keys, ApiKeyEntry, AuthSettings, Role, API_KEY_HASH_PREFIX,
};

/// Every generated token starts with this, so a leaked one is recognisable (secret
/// scanners, log reviews) and never mistaken for a JWT.
pub const TOKEN_PREFIX: &str = "st_";

/// A fresh token: [`TOKEN_PREFIX`] and 32 bytes from the OS's CSPRNG, base64url.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of `token`: `sha256:<64 lowercase hex digits>`.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{API_KEY_HASH_PREFIX}{hex}")
}

/// A new key, as `saga-tracker api-key new` prints it.
#[derive(Debug)]
pub struct NewKey {
    /// Shown once, to hand to the client; stored nowhere.
    pub token: String,
    /// The `[[auth.api_keys]]` entry holding its hash.
    pub entry: ApiKeyEntry,
}

impl NewKey {
    /// A random token for `name` with `role`. The name is checked here, so the printed entry
    /// is one the tracker will accept.
    pub fn generate(name: &str, role: Role) -> anyhow::Result<Self> {
        if !valid_key_name(name) {
            bail!("--name must be 1 to 64 characters from A-Z a-z 0-9 _ . @ -");
        }
        let token = generate_token();
        let entry = ApiKeyEntry {
            name: name.to_owned(),
            role,
            hash: hash_token(&token),
        };
        Ok(Self { token, entry })
    }

    /// The entry as TOML, under `table` (`auth.api_keys` in the main configuration,
    /// `api_keys` in `auth.api_keys_file`). The name is restricted to characters that need no
    /// escaping.
    pub fn entry_toml(&self, table: &str) -> String {
        format!(
            "[[{table}]]\nname = \"{}\"\nrole = \"{}\"\nhash = \"{}\"\n",
            self.entry.name, self.entry.role, self.entry.hash
        )
    }
}

/// One configured key, as compared.
#[derive(Debug, Clone)]
struct Key {
    name: String,
    role: Role,
    digest: [u8; 32],
}

fn keys_of(entries: &[ApiKeyEntry]) -> Vec<Key> {
    entries
        .iter()
        .filter_map(|e| {
            // Validation already refused malformed hashes; skipping is only a safety net.
            e.digest().map(|digest| Key {
                name: e.name.clone(),
                role: e.role,
                digest,
            })
        })
        .collect()
}

/// The contents of `auth.api_keys_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileContents {
    #[serde(default)]
    api_keys: Vec<ApiKeyEntry>,
}

/// What identifies one version of the file without reading it.
type Stamp = (Option<SystemTime>, u64);

#[derive(Debug)]
struct KeyFile {
    path: PathBuf,
    check_every: Duration,
    /// The keys of the last version that parsed.
    keys: RwLock<Arc<Vec<Key>>>,
    /// When the file was last looked at, and what it looked like then. A tokio mutex, taken
    /// with `try_lock`: one request checks, the others carry on with the current keys.
    checked: tokio::sync::Mutex<(Instant, Stamp)>,
}

/// Every configured API key.
#[derive(Debug)]
pub struct ApiKeys {
    inline: Vec<Key>,
    /// The inline entries again, to refuse a file that would duplicate one of them.
    inline_entries: Vec<ApiKeyEntry>,
    file: Option<KeyFile>,
}

/// A token matched a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMatch {
    pub name: String,
    pub role: Role,
}

impl ApiKeys {
    /// The inline keys and, when configured, the file's. A file that cannot be read or
    /// parsed fails start-up, naming it.
    pub async fn load(settings: &AuthSettings) -> anyhow::Result<Self> {
        let file = match &settings.api_keys_file {
            None => None,
            Some(path) => {
                let stamp = stamp(path).await?;
                let keys = read_key_file(path, &settings.api_keys).await?;
                tracing::info!(path = %path.display(), keys = keys.len(), "API keys file loaded");
                Some(KeyFile {
                    path: path.clone(),
                    check_every: Duration::from_secs(settings.api_keys_file_check_secs),
                    keys: RwLock::new(Arc::new(keys)),
                    checked: tokio::sync::Mutex::new((Instant::now(), stamp)),
                })
            }
        };
        Ok(Self {
            inline: keys_of(&settings.api_keys),
            inline_entries: settings.api_keys.clone(),
            file,
        })
    }

    /// Whether any key is configured at all.
    pub fn is_empty(&self) -> bool {
        self.inline.is_empty() && self.file.as_ref().is_none_or(|f| f.current().is_empty())
    }

    /// The key `token` belongs to, if any.
    pub async fn find(&self, token: &str) -> Option<KeyMatch> {
        if let Some(file) = &self.file {
            file.reload_if_changed(&self.inline_entries).await;
        }
        let file_keys = self.file.as_ref().map(KeyFile::current).unwrap_or_default();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let all: Vec<&Key> = self.inline.iter().chain(file_keys.iter()).collect();
        find_constant_time(&all, &digest).map(|i| KeyMatch {
            name: all[i].name.clone(),
            role: all[i].role,
        })
    }
}

/// The index of the key whose digest is `digest`. Every key is compared, and the index is
/// chosen with a constant-time select, so the time taken does not depend on where (or
/// whether) the match is. Digests are unique (validated), so at most one matches.
fn find_constant_time(keys: &[&Key], digest: &[u8; 32]) -> Option<usize> {
    let mut found = Choice::from(0);
    let mut index = 0u64;
    for (i, key) in keys.iter().enumerate() {
        let equal = key.digest.ct_eq(digest);
        index.conditional_assign(&(i as u64), equal);
        found |= equal;
    }
    bool::from(found).then_some(index as usize)
}

impl KeyFile {
    fn current(&self) -> Arc<Vec<Key>> {
        // A poisoned lock only means a writer panicked between two whole assignments.
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the file when `check_every` has passed and its modification time or size
    /// changed. A version that does not parse keeps the previous keys: refusing every key
    /// because of a typo would lock every client out at once, and the error is logged for
    /// the operator who just edited it.
    async fn reload_if_changed(&self, inline: &[ApiKeyEntry]) {
        let Ok(mut checked) = self.checked.try_lock() else {
            return;
        };
        if checked.0.elapsed() < self.check_every {
            return;
        }
        checked.0 = Instant::now();
        let now = match stamp(&self.path).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = format!("{e:#}"), "API keys file cannot be read; keeping the keys loaded before");
                return;
            }
        };
        if now == checked.1 {
            return;
        }
        match read_key_file(&self.path, inline).await {
            Ok(keys) => {
                tracing::info!(path = %self.path.display(), keys = keys.len(), "API keys file changed; reloaded");
                let mut slot = match self.keys.write() {
                    Ok(k) => k,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *slot = Arc::new(keys);
                checked.1 = now;
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = format!("{e:#}"), "API keys file changed but is invalid; keeping the keys loaded before");
                // Remember this version, so the error is logged once per bad version.
                checked.1 = now;
            }
        }
    }
}

async fn stamp(path: &Path) -> anyhow::Result<Stamp> {
    let meta = tokio::fs::metadata(path)
        .await
        .with_context(|| format!("`auth.api_keys_file` ({}) cannot be read", path.display()))?;
    Ok((meta.modified().ok(), meta.len()))
}

/// Reads and validates the file. Its entries must not repeat a name or a hash of the inline
/// keys either: either would make a caller's identity ambiguous.
async fn read_key_file(path: &Path, inline: &[ApiKeyEntry]) -> anyhow::Result<Vec<Key>> {
    let text = tokio::fs::read_to_string(path)
        .await
        .with_context(|| format!("`auth.api_keys_file` ({}) cannot be read", path.display()))?;
    let contents: KeyFileContents = Figment::from(Toml::string(&text)).extract().map_err(|e| {
        anyhow::anyhow!(
            "invalid configuration: `auth.api_keys_file` ({}): {e}",
            path.display()
        )
    })?;
    validate_api_keys("api_keys", &contents.api_keys)
        .with_context(|| format!("in `auth.api_keys_file` ({})", path.display()))?;
    for (i, entry) in contents.api_keys.iter().enumerate() {
        if inline.iter().any(|k| k.name == entry.name) {
            bail!(
                "invalid configuration: `auth.api_keys_file` ({}): `api_keys[{i}].name` {:?} is also the name of a key in `auth.api_keys`",
                path.display(),
                entry.name
            );
        }
        if inline.iter().any(|k| k.digest() == entry.digest()) {
            bail!(
                "invalid configuration: `auth.api_keys_file` ({}): `api_keys[{i}].hash` is also the hash of a key in `auth.api_keys`",
                path.display()
            );
        }
    }
    Ok(keys_of(&contents.api_keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, token: &str) -> Key {
        let entry = ApiKeyEntry {
            name: name.to_owned(),
            role: Role::Reader,
            hash: hash_token(token),
        };
        Key {
            name: entry.name.clone(),
            role: entry.role,
            digest: entry.digest().expect("a hash made by hash_token parses"),
        }
    }

    #[test]
    fn generated_tokens_are_prefixed_random_and_hash_to_the_stored_form() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX), "{a}");
        // 32 bytes in unpadded base64url are 43 characters.
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43, "{a}");
        let h = hash_token(&a);
        assert!(h.starts_with("sha256:") && h.len() == 7 + 64, "{h}");
        // The SHA-256 of "abc", from FIPS 180-2.
        assert_eq!(
            hash_token("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn every_key_is_compared_and_the_matching_one_is_found_wherever_it_is() {
        let keys = [
            key("a", "token-a"),
            key("b", "token-b"),
            key("c", "token-c"),
        ];
        let refs: Vec<&Key> = keys.iter().collect();
        for (i, token) in ["token-a", "token-b", "token-c"].iter().enumerate() {
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            assert_eq!(find_constant_time(&refs, &digest), Some(i));
        }
        let digest: [u8; 32] = Sha256::digest(b"token-d").into();
        assert_eq!(find_constant_time(&refs, &digest), None);
        assert_eq!(find_constant_time(&[], &digest), None);
    }

    #[test]
    fn a_new_key_prints_an_entry_the_configuration_accepts() {
        let k = NewKey::generate("grafana", Role::Operator).expect("valid name");
        let toml = k.entry_toml("api_keys");
        let parsed: KeyFileContents = Figment::from(Toml::string(&toml))
            .extract()
            .expect("the printed entry parses");
        assert_eq!(parsed.api_keys.len(), 1);
        assert_eq!(parsed.api_keys[0].hash, hash_token(&k.token));
        assert_eq!(parsed.api_keys[0].role, Role::Operator);
        validate_api_keys("api_keys", &parsed.api_keys).expect("and validates");
        assert!(NewKey::generate("has space", Role::Reader).is_err());
        assert!(NewKey::generate("", Role::Reader).is_err());
    }
}
