//! actix-web 4 speaks `http` 0.2 and the session core `http` 1: the few
//! headers and statuses that cross are carried over as bytes.

use actix_web::http::header as actix;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;

/// The request's headers as the core reads them.
pub(crate) fn request_headers(from: &actix::HeaderMap) -> http::HeaderMap {
    let mut to = http::HeaderMap::with_capacity(from.len());
    for (name, value) in from.iter() {
        // Every name and value actix accepted is valid for `http` 1 too;
        // a conversion that failed anyway would only hide that header.
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_str().as_bytes()),
            http::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            to.append(n, v);
        }
    }
    to
}

/// An `http` 1 header name as actix's.
pub(crate) fn name(n: &http::HeaderName) -> actix::HeaderName {
    actix::HeaderName::from_bytes(n.as_str().as_bytes())
        .expect("a valid header name is valid in both versions of `http`")
}

/// An `http` 1 header value as actix's.
pub(crate) fn value(v: &http::HeaderValue) -> actix::HeaderValue {
    actix::HeaderValue::from_bytes(v.as_bytes())
        .expect("a valid header value is valid in both versions of `http`")
}

/// A response the core wrote (a failure's), as actix's.
pub(crate) fn response(r: http::Response<&'static str>) -> HttpResponse {
    let status =
        StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = HttpResponse::build(status);
    for (n, v) in r.headers() {
        out.append_header((name(n), value(v)));
    }
    out.body(*r.body())
}
