//! The Chroma API's collection calls the operator makes, as Chroma serves them (the published
//! document: [`crate::CHROMA_API_OPENAPI`]): `GET /api/v2/auth/identity` (the token's tenant and
//! databases) and `DELETE /api/v2/tenants/{tenant}/databases/{database}/collections/{name}`
//! (200 `{}`; 404 when there is no such collection, deleted ones included). Every token of the
//! stand-in belongs to one tenant, [`TENANT`]; another tenant in a path is refused (403).
//!
//! A collection comes into being when a run (an invocation) is created to write into it, as
//! Chroma Sync creates or appends to its target collection; a deleted one no longer holds a
//! finished sync, so a later run may write a collection of that name again. Faults and auth
//! apply as to the other endpoints (`get_identity`, `delete_collection`).

use crate::{StandIn, error, guarded};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The tenant every token of the stand-in belongs to.
pub const TENANT: &str = "standin-tenant";

impl StandIn {
    /// Makes collection `name` exist in `database`, as a run into it would.
    pub fn insert_collection(&self, database: &str, name: &str) {
        self.lock()
            .collections
            .insert((database.to_owned(), name.to_owned()));
    }

    /// Removes collection `name` of `database`, as a delete would; whether it was there.
    pub fn remove_collection(&self, database: &str, name: &str) -> bool {
        self.lock()
            .collections
            .remove(&(database.to_owned(), name.to_owned()))
    }

    /// The collections that exist in `database`, by name.
    pub fn collections(&self, database: &str) -> Vec<String> {
        self.lock()
            .collections
            .iter()
            .filter(|(db, _)| db == database)
            .map(|(_, name)| name.clone())
            .collect()
    }
}

pub(super) async fn get_identity(State(s): State<StandIn>, headers: HeaderMap) -> Response {
    guarded(&s, "get_identity", &headers, false, async |_| {
        let databases: Vec<String> = s.lock().databases.iter().cloned().collect();
        axum::Json(json!({ "user_id": "standin-user", "tenant": TENANT, "databases": databases }))
            .into_response()
    })
    .await
}

pub(super) async fn delete_collection(
    State(s): State<StandIn>,
    headers: HeaderMap,
    Path((tenant, database, name)): Path<(String, String, String)>,
) -> Response {
    guarded(&s, "delete_collection", &headers, true, async |_| {
        if tenant != TENANT {
            return error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "the token is not of this tenant",
            );
        }
        let mut inner = s.lock();
        if inner.collections.remove(&(database, name)) {
            axum::Json(json!({})).into_response()
        } else {
            error(StatusCode::NOT_FOUND, "NotFound", "Collection not found")
        }
    })
    .await
}
