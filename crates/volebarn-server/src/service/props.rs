//! WebDAV dead properties of files and directories ([`DeadProps`]): read and replaced whole.
//! They belong to the path's entry: deleting or replacing the entry (also by a move onto it)
//! deletes them.

use super::{blocking, Service};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::DeadProps;
use volebarn_core::VPath;

impl Service {
    /// The dead properties of `path` (none set: empty).
    pub async fn dead_props(&self, path: &VPath) -> ServiceResult<DeadProps> {
        let meta = self.inner.meta.clone();
        let p = path.clone();
        let props = blocking(move || meta.dead_props(&p))
            .await?
            .map_err(|e| ServiceError::storage(path.as_str(), e))?;
        Ok(props.unwrap_or_default())
    }

    /// Replaces the dead properties of `path`, which must exist (404 otherwise). Properties
    /// are not content: no revision, no journal entry.
    pub async fn set_dead_props(&self, path: &VPath, props: DeadProps) -> ServiceResult<()> {
        let path = path.clone();
        self.mutate(move |tx| {
            if !path.is_root() && tx.get(&path)?.is_none() {
                return Err(ServiceError::NotFound {
                    path: path.to_string(),
                });
            }
            tx.set_dead_props(path, props);
            Ok(())
        })
        .await
    }
}
