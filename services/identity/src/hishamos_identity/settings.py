from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hishamos_kit.settings import ServiceSettings


class IdentitySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HISHAMOS_IDENTITY_", extra="ignore")

    key_encryption_key: str = Field("", description="base64 of 32 bytes; seals signing keys at rest")
    access_token_seconds: int = 900
    service_credentials: dict[str, str] = Field(
        default_factory=dict, description='JSON {"service": "secret"}: who may call IssueServiceToken'
    )
    service_token_seconds: int = 300
    operator_credentials: dict[str, str] = Field(
        default_factory=dict, description='JSON {"operator": "secret"}: who may call IssueOperatorToken'
    )
    operator_token_seconds: int = 300
    keys_refresh_seconds: float = Field(30.0, description="how often identity rereads signing keys (rotation)")
    refresh_token_days: int = 30
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456
    argon2_parallelism: int = 1
    argon2_threads: int = Field(0, description="threads that hash passwords; 0: one per CPU this process may use")
    smtp_host: str = Field("", description="SMTP server for mail; empty writes mail to mail_outbox_dir instead")
    smtp_port: int = 25
    mail_from: str = "HishamOS <no-reply@hishamos.invalid>"
    mail_outbox_dir: str = Field("", description="a directory that receives each mail as an .eml file")
    public_url: str = Field("http://localhost:8080", description="where links in mail point")
