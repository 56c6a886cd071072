//! Decryption of encrypted container bodies: the header's `key` is base64 of an RSA
//! (PKCS#1 v1.5) encrypted text which is itself base64 of the AES key; the body is AES-CBC
//! with an all-zero IV, PKCS#7 padded.

use std::path::PathBuf;
use std::sync::Mutex;

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::NoPadding};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Pkcs1v15Encrypt, RsaPrivateKey};

use super::{ContainerError, KeyCache, key_path};

/// Private keys by `publicKeyId`, read lazily from `<dir>/<id>/Private.key` (PEM, PKCS#1 or
/// PKCS#8) and kept once read.
#[derive(Debug, Default)]
pub struct KeyStore {
    dir: Option<PathBuf>,
    cache: Mutex<KeyCache>,
}

impl KeyStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        KeyStore {
            dir: Some(dir.into()),
            cache: Mutex::default(),
        }
    }

    /// A store with no keys: encrypted files fail with a clear error.
    pub fn none() -> Self {
        KeyStore::default()
    }

    /// Register a key directly (tests, or keys from a secret store).
    pub fn insert(&self, key_id: &str, key: RsaPrivateKey) {
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key_id.to_string(), key);
        }
    }

    fn get(&self, key_id: &str) -> Result<RsaPrivateKey, ContainerError> {
        if let Some(k) = self.cache.lock().ok().and_then(|c| c.get(key_id).cloned()) {
            return Ok(k);
        }
        let dir = self.dir.clone().unwrap_or_else(|| PathBuf::from("keys"));
        let path = key_path(&dir, key_id);
        let pem = std::fs::read_to_string(&path).map_err(|_| ContainerError::MissingKey {
            key_id: key_id.to_string(),
            path: path.clone(),
        })?;
        let key = RsaPrivateKey::from_pkcs1_pem(&pem)
            .or_else(|_| RsaPrivateKey::from_pkcs8_pem(&pem))
            .map_err(|e| ContainerError::BadKey {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key_id.to_string(), key.clone());
        }
        Ok(key)
    }
}

/// Decrypt a body with the RSA-wrapped AES key from the header.
pub(super) fn decrypt_body(
    body: &[u8],
    wrapped_key_b64: &str,
    key_id: &str,
    keys: &KeyStore,
) -> Result<Vec<u8>, ContainerError> {
    let wrapped = STANDARD
        .decode(wrapped_key_b64.trim())
        .map_err(|_| ContainerError::KeyNotBase64)?;
    let rsa_key = keys.get(key_id)?;
    let aes_key_b64 = rsa_key
        .decrypt(Pkcs1v15Encrypt, &wrapped)
        .map_err(|_| ContainerError::RsaDecrypt)?;
    let aes_key = STANDARD
        .decode(trim_ascii(&aes_key_b64))
        .or_else(|_| -> Result<Vec<u8>, ContainerError> {
            // Some senders wrap the raw key rather than its base64 text.
            Ok(aes_key_b64.clone())
        })?;
    if body.len() % 16 != 0 || body.is_empty() {
        return Err(ContainerError::CiphertextLength(body.len()));
    }
    let iv = [0u8; 16];
    let plain = match aes_key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(&aes_key, &iv)
            .map(|d| d.decrypt_padded_vec_mut::<NoPadding>(body)),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(&aes_key, &iv)
            .map(|d| d.decrypt_padded_vec_mut::<NoPadding>(body)),
        32 => cbc::Decryptor::<aes::Aes256>::new_from_slices(&aes_key, &iv)
            .map(|d| d.decrypt_padded_vec_mut::<NoPadding>(body)),
        n => return Err(ContainerError::AesKeyLength(n)),
    }
    .map_err(|_| ContainerError::AesKeyLength(aes_key.len()))?
    .map_err(|_| ContainerError::CiphertextLength(body.len()))?;
    Ok(strip_pkcs7(plain))
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// Remove PKCS#7 padding when it is valid; otherwise leave the bytes alone.
fn strip_pkcs7(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(&n) = v.last() {
        let n = n as usize;
        if (1..=16).contains(&n) && n <= v.len() && v[v.len() - n..].iter().all(|b| *b as usize == n) {
            v.truncate(v.len() - n);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs7_is_stripped_only_when_valid() {
        assert_eq!(strip_pkcs7(b"abc\x03\x03\x03".to_vec()), b"abc");
        assert_eq!(strip_pkcs7(b"abc\x03\x02\x03".to_vec()), b"abc\x03\x02\x03");
        assert_eq!(strip_pkcs7(b"abc\x00".to_vec()), b"abc\x00");
    }
}
