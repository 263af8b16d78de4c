//! The credentials the configuration names: a Blob client with its SAS
//! or Entra ID token, and the identity (managed or service principal) that
//! gets tokens for storage and the management API.

use std::path::Path;

use super::auth::{Identity, Tokens};
use super::blob::{BlobAuth, BlobClient};
use super::AzureError;
use crate::config::{AzureConfig, BlobConfig, IdentityKind};

/// The instance metadata service did not answer at all (`cause`): the
/// likely reason is that this is not an Azure VM, and no retry will change
/// that. Says so, and which settings work instead (`instead`).
pub fn metadata_unreachable(op: &str, endpoint: &str, cause: &str, instead: &str) -> AzureError {
    AzureError::NoMetadata {
        op: op.to_string(),
        msg: format!(
            "not running on an Azure VM? the instance metadata service ({endpoint}) is unreachable ({cause}); \
             off Azure, {instead}"
        ),
    }
}

/// What to give instead of the managed identity off Azure.
pub const INSTEAD_OF_MANAGED: &str =
    "set identity = \"service_principal\" with tenant, client_id and \
     client_secret_file in [azure], or a SAS (sas_token_file) for Blob and flow-log sources";

/// A secret file that cannot be read: named, never its content.
fn io(path: &Path, e: std::io::Error) -> AzureError {
    AzureError::Credentials(format!("{}: {e}", path.display()))
}

/// A Blob client with the configured credential: the SAS, else an Entra ID
/// token from the `[azure]` identity.
pub fn blob_client(b: &BlobConfig, az: &AzureConfig) -> Result<BlobClient, AzureError> {
    let sas = match (&b.sas_token, &b.sas_token_file) {
        (Some(s), _) => Some(s.0.trim().trim_start_matches('?').to_string()),
        (None, Some(p)) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| io(p, e))?
                .trim()
                .trim_start_matches('?')
                .to_string(),
        ),
        (None, None) => None,
    };
    let auth = match sas {
        Some(s) if s.is_empty() => {
            return Err(AzureError::Credentials(
                "source.blob: the SAS token is empty".into(),
            ))
        }
        Some(s) => BlobAuth::Sas(s),
        None => BlobAuth::Bearer(Tokens::new(identity(az)?, "https://storage.azure.com/")),
    };
    let client = BlobClient::new(&b.account_url, &b.container, auth)?;
    Ok(match &b.ca_file {
        Some(p) => client.trusting(&std::fs::read(p).map_err(|e| io(p, e))?)?,
        None => client,
    })
}

/// The Entra ID identity `[azure]` describes.
pub fn identity(az: &AzureConfig) -> Result<Identity, AzureError> {
    Ok(match az.identity {
        IdentityKind::Managed => Identity::Managed {
            endpoint: az.imds_endpoint.clone(),
            client_id: az.client_id.clone(),
        },
        IdentityKind::ServicePrincipal => {
            let need = |v: &Option<String>, k: &str| {
                v.clone().ok_or_else(|| {
                    AzureError::Credentials(format!("azure.{k} is needed for a service principal"))
                })
            };
            let file = az.client_secret_file.as_ref().ok_or_else(|| {
                AzureError::Credentials(
                    "azure.client_secret_file is needed for a service principal".into(),
                )
            })?;
            let secret = std::fs::read_to_string(file)
                .map_err(|e| io(file, e))?
                .trim()
                .to_string();
            Identity::ServicePrincipal {
                authority: az.authority.clone(),
                tenant: need(&az.tenant, "tenant")?,
                client_id: need(&az.client_id, "client_id")?,
                secret,
            }
        }
    })
}
