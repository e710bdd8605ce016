//! The session id in a request and a response header, for API and mobile
//! clients that keep no cookies (`header = "X-Session-Id"`). Read as
//! strictly as the cookie; written when the session is saved, and sent
//! empty when it ends, which tells the client to forget the id.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::id::SessionId;
use crate::keys::{read_id, IdText, Keys};
use crate::request::ClientId;

/// What the client sent in the header `name`: one well-formed id, or not.
/// Two values are malformed (neither is trusted); an empty one, the echo of
/// an ended session, is none. With `signer`, only an id one of its keys
/// signed is an id.
pub(crate) fn client_id(headers: &HeaderMap, name: &HeaderName, signer: Option<&Keys>) -> ClientId {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return ClientId::NotSent;
    };
    if values.next().is_some() {
        return ClientId::Malformed;
    }
    match read_id(value.as_bytes(), signer) {
        Some(id) => ClientId::Valid(id),
        None if value.is_empty() => ClientId::NotSent,
        None => ClientId::Malformed,
    }
}

/// The header value carrying `id`, signed by `signer`'s first key if given.
pub(crate) fn carrying(id: &SessionId, signer: Option<&Keys>) -> HeaderValue {
    // Hex digits, a dot and URL-safe base64 are always a valid header value.
    HeaderValue::from_str(&IdText::of(id, signer)).unwrap_or_else(|_| ended())
}

/// The header value that ends the session on the client: empty.
pub(crate) fn ended() -> HeaderValue {
    HeaderValue::from_static("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(values: &[&str]) -> ClientId {
        let name = HeaderName::from_static("x-session-id");
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(&name, HeaderValue::from_str(v).unwrap());
        }
        client_id(&headers, &name, None)
    }

    #[test]
    fn strict_like_the_cookie() {
        let id = SessionId::generate().unwrap();
        assert_eq!(sent(&[&id.to_string()]), ClientId::Valid(id));
        assert_eq!(sent(&[]), ClientId::NotSent);
        assert_eq!(sent(&[""]), ClientId::NotSent);
        let text = id.to_string();
        for bad in [
            text.to_uppercase(),
            format!(" {text}"),
            format!("{text};"),
            format!("session_id={text}"),
            text[..39].to_owned(),
        ] {
            assert_eq!(sent(&[&bad]), ClientId::Malformed, "{bad:?}");
        }
        assert_eq!(sent(&[&text, &text]), ClientId::Malformed);
        assert_eq!(carrying(&id, None).to_str().unwrap(), text);
    }
}
