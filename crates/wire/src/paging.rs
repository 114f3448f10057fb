//! Continuation tokens: the store's opaque cursor, carried as `$skiptoken`
//! (base64url) in an absolute `nextLink`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keyhaven_core::Error;

/// Encodes a store cursor as a skiptoken.
pub fn encode_skiptoken(cursor: &str) -> String {
    URL_SAFE_NO_PAD.encode(cursor.as_bytes())
}

/// Decodes a skiptoken; garbage is a 400.
pub fn decode_skiptoken(token: &str) -> Result<String, Error> {
    URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| Error::BadParameter("The $skiptoken is invalid.".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skiptokens_round_trip() {
        assert_eq!(
            decode_skiptoken(&encode_skiptoken("abc-1")).unwrap(),
            "abc-1"
        );
        assert!(decode_skiptoken("!!!").is_err());
    }
}
