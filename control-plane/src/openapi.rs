//! The OpenAPI document served at `/openapi.json`, generated from the handlers' annotations.

use crate::routes::{
    audit, auth, internal, key_edits, key_policy, key_rotation, keys, offboarding, rules, servers,
    users,
};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keygate control plane",
        description = "Users, MCP servers, access rules, API keys, and the key-table feed for the edge."
    ),
    paths(
        auth::options,
        auth::login,
        auth::callback,
        auth::token,
        auth::logout,
        users::me,
        keys::create_own,
        keys::list_own,
        keys::get_own,
        keys::delete_own,
        key_edits::update_own,
        keys::admin_create,
        keys::admin_list,
        keys::admin_get,
        keys::admin_delete,
        key_edits::admin_update,
        key_policy::get,
        key_policy::put,
        key_rotation::rotate_own,
        key_rotation::admin_rotate,
        users::list,
        users::create,
        users::get,
        users::update,
        users::delete,
        offboarding::suspend,
        offboarding::unsuspend,
        offboarding::revoke_keys,
        servers::list,
        servers::create,
        servers::get,
        servers::update,
        servers::delete,
        rules::list,
        rules::create,
        rules::get,
        rules::update,
        rules::delete,
        audit::list,
        internal::key_table,
        internal::usage,
    )
)]
struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
