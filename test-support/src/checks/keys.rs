//! The properties of the key and seal decoders (`sign_ids`, `keys_file`,
//! `seal_records`), shared by the fuzz targets `signed_id`, `signed_cookie`,
//! `key_file` and `sealed_data` and by `properties.rs`.

use server_sessions::{store::Record, Config, Keys, SessionConfig, SessionId};

use super::{contains, request, Use, LIVE};

/// The two keys the checks verify with, the first signing.
pub fn two_keys() -> Keys {
    Keys::new(&[[1; 32], [2; 32]]).unwrap()
}

/// Only the second key, as a rotated-out signer.
fn second_key() -> Keys {
    Keys::new(&[[2; 32]]).unwrap()
}

/// A signed id is accepted exactly when it is one of the listed keys'
/// signature text of the id it names; nothing else is, and the accepted id
/// is the one written.
pub fn check_signed_id(data: &[u8]) {
    let keys = two_keys();
    let named = data.get(..40).and_then(|h| SessionId::from_bytes(h).ok());
    let expected = named
        .filter(|id| data == keys.sign(id).as_bytes() || data == second_key().sign(id).as_bytes());
    assert_eq!(keys.verify(data), expected, "{data:?}");
}

/// A signed cookie through the layer: the live session is found only when
/// the client sent its signed text, and every cookie set is signed.
pub fn check_signed_cookie(mode: u8, header: &[u8]) {
    let use_ = Use::from_byte(mode);
    let mut config = SessionConfig::default();
    config.keys = Some(two_keys());
    config.sign_ids = true;
    let Some(answer) = request(
        Config::single(config),
        Some(header),
        use_,
        b"{\"a\":1}",
        server_sessions::store::now_millis(),
    ) else {
        return;
    };
    assert!(answer.status < 500, "{answer:?}");
    if use_ == Use::Nothing {
        assert!(answer.set_cookies.is_empty(), "{answer:?}");
        return;
    }
    assert_eq!(answer.set_cookies.len(), 1, "{answer:?}");
    let cookie = &answer.set_cookies[0];
    let value = cookie
        .strip_prefix(b"session_id=")
        .and_then(|rest| rest.split(|&b| b == b';').next())
        .expect("the session cookie");
    let id = two_keys()
        .verify(value)
        .expect("every cookie set is signed");
    let live: SessionId = LIVE.parse().unwrap();
    let sent_live = [two_keys(), second_key()]
        .iter()
        .any(|k| contains(header, k.sign(&live).as_bytes()));
    if id == live {
        assert!(sent_live, "{answer:?}");
        assert!(answer.body.starts_with("false "), "{answer:?}");
    } else {
        // A fresh id, never one the client offered.
        assert!(!contains(header, id.as_hex().as_bytes()), "{answer:?}");
    }
}

/// A key file: parsing never panics; it reads one key per line that is not
/// blank or a comment; neither an error nor `Debug` shows a line.
pub fn check_key_file(text: &str) {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let long = |shown: &str| lines.iter().any(|l| l.len() >= 16 && shown.contains(l));
    match Keys::parse(text) {
        Ok(keys) => {
            assert_eq!(keys.len(), lines.len());
            assert!(!long(&format!("{keys:?}")), "{keys:?}");
        }
        Err(e) => assert!(!long(&format!("{e} {e:?}")), "{e}"),
    }
}

/// Sealed data: the first 20 bytes give the id, the rest is the data. Data
/// that is not sealed reads as it is; sealed data opens with its own id
/// only, which bytes from outside never are (a forgery of XChaCha20-
/// Poly1305's tag).
pub fn check_sealed_data(data: &[u8]) {
    let Some((raw, sealed)) = data.split_at_checked(20) else {
        return;
    };
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let id: SessionId = hex.parse().unwrap();
    let record = Record {
        data: sealed.to_vec(),
        created: 0,
        expires: 0,
        timeout: None,
        user: None,
    };
    match record.open_data(&id) {
        Ok(opened) => {
            assert!(!record.is_sealed(), "forged a seal: {data:?}");
            assert_eq!(&opened[..], sealed);
        }
        Err(_) => assert!(record.is_sealed()),
    }
}

/// A sealed cookie value (the cookie store): opening never panics; only a
/// value one of the keys sealed opens, under its own cookie name; what a
/// seal holds comes back as it was.
pub fn check_sealed_cookie(value: &[u8]) {
    use server_sessions::store::{open_cookie, seal_cookie};
    let keys = two_keys();
    // Bytes from outside: a forgery of the tag is beyond reach.
    assert_eq!(
        open_cookie(&keys, "session_id", value, 4096),
        None,
        "{value:?}"
    );
    // The same bytes as a session's data: sealed, they open as they were.
    let id = SessionId::generate().unwrap();
    let record = Record {
        data: value.to_vec(),
        created: 1,
        expires: 2,
        timeout: None,
        user: None,
    };
    let sealed = seal_cookie(&keys, "session_id", &id, &record).unwrap();
    assert_eq!(
        open_cookie(&keys, "session_id", sealed.as_bytes(), value.len()),
        Some((id, record))
    );
    assert_eq!(
        open_cookie(&keys, "other", sealed.as_bytes(), value.len()),
        None
    );
    assert_eq!(
        open_cookie(&second_key(), "session_id", sealed.as_bytes(), value.len()),
        None
    );
}
