//! The Cloud WAF file container, built here with a generated RSA key: encryption, compression,
//! checksums, and what goes wrong (truncated ciphertext, wrong or missing key, bombs).

mod support;

use std::sync::OnceLock;

use rsa::RsaPrivateKey;
use support::{Comp, KEY_ID, cloud_lines, container, rsa_key, write_key};
use wafstream::container::{self, Checksum, Compression, ContainerError, KeyStore, Limits};

fn key() -> &'static RsaPrivateKey {
    static K: OnceLock<RsaPrivateKey> = OnceLock::new();
    K.get_or_init(|| rsa_key(1))
}

fn store() -> KeyStore {
    let s = KeyStore::none();
    s.insert(KEY_ID, key().clone());
    s
}

#[test]
fn encrypted_zlib_container_with_aes256() {
    let plain = cloud_lines(50);
    let file = container(plain.as_bytes(), Comp::Zlib, Some((&key().to_public_key(), 32)), None);
    let o = container::open(&file, &store(), Limits::default()).expect("open");
    assert!(o.encrypted);
    assert_eq!(o.compression, Compression::Zlib);
    assert_eq!(o.checksum, Checksum::Match);
    assert_eq!(o.body, plain.as_bytes());
    assert_eq!(o.lines().count(), 50);
    assert_eq!(o.header_value("accountId"), Some("123456"));
}

#[test]
fn encrypted_gzip_and_plain_bodies_with_every_aes_size() {
    let plain = cloud_lines(3);
    for (comp, len) in [(Comp::Gzip, 16), (Comp::None, 24), (Comp::Zlib, 16), (Comp::Gzip, 32)] {
        let file = container(plain.as_bytes(), comp, Some((&key().to_public_key(), len)), None);
        let o = container::open(&file, &store(), Limits::default()).expect("open");
        assert_eq!(o.body, plain.as_bytes(), "aes-{len}");
        assert_eq!(o.checksum, Checksum::Match);
    }
}

#[test]
fn key_read_from_keys_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_key(dir.path(), KEY_ID, key());
    let plain = cloud_lines(2);
    let file = container(plain.as_bytes(), Comp::Zlib, Some((&key().to_public_key(), 32)), None);
    let o = container::open(&file, &KeyStore::new(dir.path()), Limits::default()).expect("open");
    assert_eq!(o.body, plain.as_bytes());
}

#[test]
fn compressed_but_not_encrypted_and_key_minus_one() {
    let plain = cloud_lines(4);
    let mut file = container(plain.as_bytes(), Comp::Zlib, None, None);
    // `key:-1` means "not encrypted".
    file.splice(0..0, b"key:-1\n".iter().copied());
    let o = container::open(&file, &KeyStore::none(), Limits::default()).expect("open");
    assert!(!o.encrypted);
    assert_eq!(o.compression, Compression::Zlib);
    assert_eq!(o.body, plain.as_bytes());
}

#[test]
fn whole_file_gzipped_as_pushed_to_s3() {
    let plain = cloud_lines(5);
    let file = support::gzip(&container(plain.as_bytes(), Comp::None, None, None));
    assert!(container::looks_like_container(&file));
    let o = container::open(&file, &KeyStore::none(), Limits::default()).expect("open");
    assert_eq!(o.compression, Compression::Gzip);
    assert_eq!(o.lines().count(), 5);
}

#[test]
fn truncated_ciphertext_is_a_clear_retriable_error() {
    let plain = cloud_lines(20);
    let mut file = container(plain.as_bytes(), Comp::Zlib, Some((&key().to_public_key(), 32)), None);
    file.truncate(file.len() - 5);
    let err = container::open(&file, &store(), Limits::default()).unwrap_err();
    assert!(matches!(err, ContainerError::CiphertextLength(_)), "{err}");
    assert!(err.is_retriable());
    assert!(err.to_string().contains("multiple of 16"));
}

#[test]
fn wrong_key_is_a_clear_error() {
    let plain = cloud_lines(2);
    let file = container(plain.as_bytes(), Comp::Zlib, Some((&key().to_public_key(), 32)), None);
    let wrong = KeyStore::none();
    wrong.insert(KEY_ID, rsa_key(2));
    let err = container::open(&file, &wrong, Limits::default()).unwrap_err();
    assert!(matches!(err, ContainerError::RsaDecrypt), "{err}");
    assert!(!err.is_retriable());
}

#[test]
fn missing_key_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = cloud_lines(1);
    let file = container(plain.as_bytes(), Comp::None, Some((&key().to_public_key(), 16)), None);
    let err = container::open(&file, &KeyStore::new(dir.path()), Limits::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ContainerError::MissingKey { .. }));
    assert!(msg.contains("Private.key") && msg.contains("\"7\""), "{msg}");
}

#[test]
fn bad_checksum_is_reported_and_data_kept() {
    let plain = cloud_lines(3);
    let file = container(
        plain.as_bytes(),
        Comp::Zlib,
        None,
        Some("0123456789abcdef0123456789abcdef"),
    );
    let o = container::open(&file, &KeyStore::none(), Limits::default()).expect("open");
    match &o.checksum {
        Checksum::Mismatch { expected, actual } => {
            assert_eq!(expected, "0123456789abcdef0123456789abcdef");
            assert_eq!(actual, &support::md5_hex(plain.as_bytes()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(o.lines().count(), 3);
}

#[test]
fn gzip_bomb_hits_the_cap() {
    let zeros = vec![0u8; 64 * 1024 * 1024];
    let bomb = support::gzip(&zeros);
    assert!(bomb.len() < 256 * 1024, "bomb is {} bytes", bomb.len());
    let limits = Limits {
        max_decompressed_bytes: 8 * 1024 * 1024,
    };
    let err = container::open(&bomb, &KeyStore::none(), limits).unwrap_err();
    assert!(matches!(err, ContainerError::TooLarge(8_388_608)), "{err}");
    // Inside a container body too.
    let file = container(&zeros, Comp::Zlib, None, None);
    let err = container::open(&file, &KeyStore::none(), limits).unwrap_err();
    assert!(matches!(err, ContainerError::TooLarge(_)), "{err}");
}

#[test]
fn corrupt_zlib_is_an_error_not_a_panic() {
    let plain = cloud_lines(10);
    let mut z = support::zlib(plain.as_bytes());
    let mid = z.len() / 2;
    for b in &mut z[mid..mid + 8] {
        *b ^= 0xA5;
    }
    let mut file = b"format:CEF\n|==|\n".to_vec();
    file.extend_from_slice(&z);
    let err = container::open(&file, &KeyStore::none(), Limits::default()).unwrap_err();
    assert!(matches!(err, ContainerError::Decompress { kind: "zlib", .. }), "{err}");
}

#[test]
fn w3c_fields_in_header() {
    let file = b"format:W3C\n#Fields: date time c-ip cs-method cs-uri sc-status\n|==|\n2024-01-20 10:00:00 198.51.100.7 GET a.example.com/x 200\n";
    let o = container::open(file, &KeyStore::none(), Limits::default()).expect("open");
    let cols = o.w3c.clone().expect("fields");
    assert_eq!(cols.names.len(), 6);
    let line = std::str::from_utf8(o.lines().next().expect("line")).expect("utf8");
    let rec = wafstream::parse::parse_event(line, Some(&cols)).expect("w3c");
    assert!(rec.fields.iter().any(|f| f.key == "src" && f.raw == "198.51.100.7"));
}

/// Bodies whose first bytes pass RFC 1950's header check by chance are text, not zlib: each
/// of these used to be taken for zlib and dead-lettered whole.
#[test]
fn text_that_looks_like_zlib_is_read_as_text() {
    for body in [
        "80.12.3.4 GET a.example.com/x 200\n80.12.3.5 GET a.example.com/y 404\n",
        "x^ made-up first line\nsecond line\n",
        "HK1 2\nthird\n",
        "(4 x\ny\n",
    ] {
        let file = format!("format:W3C\n#Fields: c-ip cs-method cs-uri sc-status\n|==|\n{body}");
        let o = container::open(file.as_bytes(), &KeyStore::none(), Limits::default())
            .unwrap_or_else(|e| panic!("{body:?}: {e}"));
        assert_eq!(o.compression, wafstream::container::Compression::None, "{body:?}");
        assert_eq!(o.lines().count(), 2, "{body:?}");
        // And as a whole file with no header at all.
        let o = container::open(body.as_bytes(), &KeyStore::none(), Limits::default())
            .unwrap_or_else(|e| panic!("{body:?}: {e}"));
        assert_eq!(o.body, body.as_bytes());
    }
    // What a real zlib or gzip stream starts with still is one.
    let z = support::zlib(b"CEF:0|a\n");
    assert_eq!(wafstream::container::magic(&z), wafstream::container::Compression::Zlib);
    let g = support::gzip(b"CEF:0|a\n");
    assert_eq!(wafstream::container::magic(&g), wafstream::container::Compression::Gzip);
    assert!(!container::looks_like_container(b"80.12.3.4 GET a.example.com/x 200\n"));
}

/// A zlib stream that starts right and breaks later is corrupt: still an error, never text.
#[test]
fn zlib_broken_after_its_start_is_still_an_error() {
    let z = support::zlib(cloud_lines(50).as_bytes());
    let mut broken = z[..z.len() / 2].to_vec();
    broken.extend_from_slice(&[0xff; 64]);
    let mut file = b"format:CEF\n|==|\n".to_vec();
    file.extend_from_slice(&broken);
    let err = container::open(&file, &KeyStore::none(), Limits::default()).unwrap_err();
    assert!(matches!(err, ContainerError::Decompress { kind: "zlib", .. }), "{err}");
}
