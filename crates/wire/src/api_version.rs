//! The `api-version` query parameter of the data plane.

use keyhaven_core::Error;

/// Every data-plane api-version the Azure SDKs and CLI send; all answer identically.
pub const SUPPORTED: &[&str] = &[
    "2016-10-01",
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    // Previews that shipped SDKs still send (the Azure CLI 2.91 keys module
    // pins 7.6-preview.2).
    "7.0-preview",
    "7.1-preview",
    "7.2-preview",
    "7.3-preview",
    "7.4-preview.1",
    "7.5-preview.1",
    "7.6-preview.1",
    "7.6-preview.2",
    "2025-06-01",
    "2025-07-01",
    "2026-01-01-preview",
    "2026-04-01",
];

/// The newest supported version (what error messages recommend).
pub const LATEST: &str = "2026-04-01";

/// A recognised api-version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersion(&'static str);

impl ApiVersion {
    /// Parses the query value; missing or unknown values are Azure's 400.
    pub fn parse(value: Option<&str>) -> Result<Self, Error> {
        let Some(v) = value else {
            return Err(Error::BadParameter(
                "The api-version query parameter (?api-version=) is required for all requests."
                    .into(),
            ));
        };
        SUPPORTED
            .iter()
            .find(|s| **s == v)
            .map(|s| Self(s))
            .ok_or_else(|| {
                let shown: String = v.chars().take(40).collect();
                Error::BadParameter(format!(
                    "The specified version ({shown}) is not recognized. Consider using the latest supported version ({LATEST})."
                ))
            })
    }

    /// The version string.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sdk_version_is_accepted() {
        for v in SUPPORTED {
            assert_eq!(ApiVersion::parse(Some(v)).unwrap().as_str(), *v);
        }
    }

    #[test]
    fn missing_or_unknown_version_is_bad_parameter() {
        assert!(matches!(
            ApiVersion::parse(None),
            Err(Error::BadParameter(_))
        ));
        assert!(matches!(
            ApiVersion::parse(Some("9.9")),
            Err(Error::BadParameter(_))
        ));
    }
}
