//! Users, API keys, policies, approvals, transaction signing and the audit log.

use crate::{Client, ClientError, REQUEST_TIMEOUT};
use dkms_proto::api::{
    ApiKeyInfo, ApiKeyRequest, ApprovalInfo, ApprovalRequest, AuditHead, AuditPage, DryRunRequest,
    DryRunResponse, IdRequest, LoginRequest, LoginResponse, PolicyDeleteRequest, PolicyInfo,
    PolicyPutRequest, SignRequestResponse, SignTxRequest, UserInfo, UserRequest, UsernameRequest,
    WhoAmI,
};

impl Client {
    /// `POST /api/mappic/auth/login`: a session token; build a new [`Client`] with it.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<LoginResponse, ClientError> {
        let body = LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
        };
        self.post("/api/mappic/auth/login", &body, None).await
    }

    /// `POST /api/mappic/auth/logout`: ends this client's session.
    pub async fn logout(&self) -> Result<bool, ClientError> {
        self.post("/api/mappic/auth/logout", &serde_json::json!({}), None)
            .await
    }

    /// `GET /api/mappic/auth/whoami`
    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        self.get("/api/mappic/auth/whoami", &[], REQUEST_TIMEOUT)
            .await
    }

    /// `POST /api/mappic/user/create`
    pub async fn create_user(&self, req: &UserRequest) -> Result<UserInfo, ClientError> {
        self.post("/api/mappic/user/create", req, None).await
    }

    /// `POST /api/mappic/user/update`
    pub async fn update_user(&self, req: &UserRequest) -> Result<UserInfo, ClientError> {
        self.post("/api/mappic/user/update", req, None).await
    }

    /// `POST /api/mappic/user/delete`
    pub async fn delete_user(&self, username: &str) -> Result<bool, ClientError> {
        let body = UsernameRequest {
            username: username.to_owned(),
        };
        self.post("/api/mappic/user/delete", &body, None).await
    }

    /// `GET /api/mappic/user/list`
    pub async fn list_users(&self) -> Result<Vec<UserInfo>, ClientError> {
        self.get("/api/mappic/user/list", &[], REQUEST_TIMEOUT)
            .await
    }

    /// `POST /api/mappic/apikey/create`: the answer's `token` is shown this once.
    pub async fn create_api_key(&self, req: &ApiKeyRequest) -> Result<ApiKeyInfo, ClientError> {
        self.post("/api/mappic/apikey/create", req, None).await
    }

    /// `GET /api/mappic/apikey/list`
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>, ClientError> {
        self.get("/api/mappic/apikey/list", &[], REQUEST_TIMEOUT)
            .await
    }

    /// `POST /api/mappic/apikey/revoke`
    pub async fn revoke_api_key(&self, id: &str) -> Result<ApiKeyInfo, ClientError> {
        let body = IdRequest { id: id.to_owned() };
        self.post("/api/mappic/apikey/revoke", &body, None).await
    }

    /// `POST /api/mappic/policy/put`
    pub async fn put_policy(&self, req: &PolicyPutRequest) -> Result<PolicyInfo, ClientError> {
        self.post("/api/mappic/policy/put", req, None).await
    }

    /// `POST /api/mappic/policy/delete`
    pub async fn delete_policy(
        &self,
        name: &str,
        expected_version: Option<i64>,
    ) -> Result<bool, ClientError> {
        let body = PolicyDeleteRequest {
            name: name.to_owned(),
            expected_version,
        };
        self.post("/api/mappic/policy/delete", &body, None).await
    }

    /// `GET /api/mappic/policy/get` (the live version when `version` is `None`).
    pub async fn get_policy(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<PolicyInfo, ClientError> {
        let v = version.map(|v| v.to_string());
        let mut q = vec![("name", name)];
        if let Some(v) = &v {
            q.push(("version", v));
        }
        self.get("/api/mappic/policy/get", &q, REQUEST_TIMEOUT)
            .await
    }

    /// `GET /api/mappic/policy/list`: the built-in document, then every live one.
    pub async fn list_policies(&self) -> Result<Vec<PolicyInfo>, ClientError> {
        self.get("/api/mappic/policy/list", &[], REQUEST_TIMEOUT)
            .await
    }

    /// `GET /api/mappic/policy/history`
    pub async fn policy_history(&self, name: &str) -> Result<Vec<PolicyInfo>, ClientError> {
        self.get(
            "/api/mappic/policy/history",
            &[("name", name)],
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `POST /api/mappic/policy/dryRun`
    pub async fn dry_run(&self, req: &DryRunRequest) -> Result<DryRunResponse, ClientError> {
        self.post("/api/mappic/policy/dryRun", req, None).await
    }

    /// `POST /api/mappic/dkms/sign/tx`: returns the task id; `sign/get` then carries
    /// `signedTx` and `txHash`.
    pub async fn request_sign_tx(&self, req: &SignTxRequest) -> Result<String, ClientError> {
        let r: SignRequestResponse = self.post("/api/mappic/dkms/sign/tx", req, None).await?;
        Ok(r.instance_id)
    }

    /// `GET /api/mappic/dkms/approval/list`: signings waiting for approvals.
    pub async fn list_approvals(&self) -> Result<Vec<ApprovalInfo>, ClientError> {
        self.get("/api/mappic/dkms/approval/list", &[], REQUEST_TIMEOUT)
            .await
    }

    /// `POST /api/mappic/dkms/approval/approve` (`approve` true) or `…/reject`.
    pub async fn vote(
        &self,
        instance_id: &str,
        approve: bool,
        comment: &str,
    ) -> Result<ApprovalInfo, ClientError> {
        let body = ApprovalRequest {
            instance_id: instance_id.to_owned(),
            comment: comment.to_owned(),
        };
        let path = if approve {
            "/api/mappic/dkms/approval/approve"
        } else {
            "/api/mappic/dkms/approval/reject"
        };
        self.post(path, &body, None).await
    }

    /// `GET /api/mappic/audit/query` with the given filters (`from`, `to`, `principal`,
    /// `keyId`, `action`, `decision`, `afterSeq`, `limit`).
    pub async fn audit_query(&self, query: &[(&str, &str)]) -> Result<AuditPage, ClientError> {
        self.get("/api/mappic/audit/query", query, REQUEST_TIMEOUT)
            .await
    }

    /// `GET /api/mappic/audit/head`: the newest entry as a checkpoint.
    pub async fn audit_head(&self) -> Result<AuditHead, ClientError> {
        self.get("/api/mappic/audit/head", &[], REQUEST_TIMEOUT)
            .await
    }

    /// `GET /api/mappic/audit/export`: the log from `after_seq` on, as JSON lines.
    pub async fn audit_export(&self, after_seq: u64) -> Result<String, ClientError> {
        let after = after_seq.to_string();
        self.get_text("/api/mappic/audit/export", &[("afterSeq", &after)])
            .await
    }
}
