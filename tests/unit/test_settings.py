from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from sophia_tasks.settings import SECRET_VARIABLES, ConfigError, Secret, load_settings, mask_url


def test_defaults_match_the_contract() -> None:
    s = load_settings({})
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert s.redis_url == "redis://127.0.0.1:6379/1"
    assert s.postgres_dsn == "postgresql://postgres@127.0.0.1:5432/sophia"
    assert s.snowflake.emulator and s.snowflake.host == "127.0.0.1" and s.snowflake.port == 8765
    assert s.max_body_bytes == 1024 * 1024 and s.dedupe_window_seconds == 86400 and s.port == 9009


def test_tokens_and_secrets_are_lists() -> None:
    s = load_settings({"SOPHIA_WEBHOOK_TOKENS": " a, b ,,", "SOPHIA_WEBHOOK_SECRET": "whsec_x"})
    assert [t.reveal() for t in s.webhook_tokens] == ["a", "b"]
    assert [x.reveal() for x in s.webhook_secrets] == ["whsec_x"]


def test_real_snowflake_account_leaves_emulator_mode() -> None:
    s = load_settings({"SOPHIA_SNOWFLAKE_ACCOUNT": "xy12345.eu-west-1"})
    kwargs = s.snowflake.connect_kwargs()
    assert not s.snowflake.emulator and kwargs["account"] == "xy12345.eu-west-1"
    assert "host" not in kwargs and "protocol" not in kwargs  # the connector's own https host for the account


def test_snowflake_is_reached_over_https_whenever_a_host_is_set() -> None:
    emulator = load_settings({}).snowflake
    assert (emulator.host, emulator.port, emulator.protocol) == ("127.0.0.1", 8765, "http")
    remote = load_settings({"SOPHIA_SNOWFLAKE_HOST": "sf.example.com"}).snowflake
    assert (remote.port, remote.protocol) == (443, "https")
    account = load_settings({"SOPHIA_SNOWFLAKE_ACCOUNT": "xy1", "SOPHIA_SNOWFLAKE_HOST": "xy1.privatelink.test"})
    assert account.snowflake.connect_kwargs()["protocol"] == "https"
    for env in ({"SOPHIA_SNOWFLAKE_ACCOUNT": "xy1", "SOPHIA_SNOWFLAKE_PROTOCOL": "http"},
                {"SOPHIA_SNOWFLAKE_HOST": "sf.example.com", "SOPHIA_SNOWFLAKE_PROTOCOL": "http"}):
        with pytest.raises(ConfigError, match="http is only for the emulator on this machine"):
            load_settings(env)


def test_snowflake_key_pair_auth(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from snowflake.connector.connection import _get_private_bytes_from_file

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "rsa_key.p8"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"pass-SECRET-1")))
    s = load_settings({"SOPHIA_SNOWFLAKE_ACCOUNT": "xy1", "SOPHIA_SNOWFLAKE_PRIVATE_KEY_FILE": str(pem),
                       "SOPHIA_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": "pass-SECRET-1"})
    kwargs = s.snowflake.connect_kwargs()
    assert kwargs["authenticator"] == "SNOWFLAKE_JWT" and "password" not in kwargs
    assert kwargs["private_key_file"] == str(pem) and kwargs["private_key_file_pwd"] == "pass-SECRET-1"
    assert "SECRET" not in repr(s)
    # The connector's own loader opens the key with the passphrase the settings hand it.
    der = _get_private_bytes_from_file(kwargs["private_key_file"], kwargs["private_key_file_pwd"])
    assert serialization.load_der_private_key(der, None).public_key().public_numbers() == \
        key.public_key().public_numbers()
    with pytest.raises(ConfigError, match="SOPHIA_SNOWFLAKE_PRIVATE_KEY_FILE: no file at"):
        load_settings({"SOPHIA_SNOWFLAKE_ACCOUNT": "xy1", "SOPHIA_SNOWFLAKE_PRIVATE_KEY_FILE": str(tmp_path / "no")})


def test_bad_numbers_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="SOPHIA_MAX_BODY_BYTES"):
        load_settings({"SOPHIA_MAX_BODY_BYTES": "lots"})


def test_retry_backoff_must_stay_below_visibility_timeout() -> None:
    with pytest.raises(ConfigError, match="VISIBILITY_TIMEOUT"):
        load_settings({"SOPHIA_RETRY_BACKOFF_MAX": "3000", "SOPHIA_VISIBILITY_TIMEOUT": "3600"})


def test_one_bulk_batch_in_flight_unless_told_otherwise() -> None:
    """Measured on 2 cores: one batch backfilled as fast as two and kept the live lag down."""
    assert load_settings({}).bulk_inflight == 1
    assert load_settings({"SOPHIA_BULK_INFLIGHT": "3"}).bulk_inflight == 3
    assert load_settings({"SOPHIA_BULK_INFLIGHT": "0"}).bulk_inflight == 0


SECRETS = {
    "SOPHIA_WEBHOOK_TOKENS": "tok-SECRET-123,tok-SECRET-124",
    "SOPHIA_WEBHOOK_SECRET": "whsec_c2VjcmV0LVNFQ1JFVC0xMjU=",
    "SOPHIA_SNOWFLAKE_PASSWORD": "pw-SECRET-456",
    "SOPHIA_GONG_ACCESS_KEY": "key-SECRET-457",
    "SOPHIA_GONG_ACCESS_KEY_SECRET": "gong-SECRET-789",
    "SOPHIA_SLACK_WEBHOOK_URL": "https://hooks.slack.test/services/SECRET-012",
    "SENTRY_DSN": "https://pub-SECRET-345@sentry.test/1",
    "SOPHIA_BROKER_URL": "redis://:broker-SECRET-678@127.0.0.1:6379/0",
    "SOPHIA_REDIS_URL": "redis://cache:cache-SECRET-901@127.0.0.1:6379/1",
    "SOPHIA_POSTGRES_DSN": "postgresql://sophia:pg-SECRET-234@127.0.0.1:5432/sophia",
    "SOPHIA_DATA_KEYS": "U0VDUkVULVNFQ1JFVC1TRUNSRVQtU0VDUkVULTEyMzQ=,U0VDUkVULVNFQ1JFVC1TRUNSRVQtU0VDUkVULTU2Nzg=",
}


def test_no_secret_in_the_settings_repr_or_str() -> None:
    s = load_settings(SECRETS)
    for text in (repr(s), str(s), repr(s.snowflake), f"{s}", "%s" % (s,)):
        assert "SECRET" not in text and "U0VDUkVU" not in text
    assert "127.0.0.1:6379/0" in repr(s)  # the rest of a URL stays readable
    assert s.snowflake.connect_kwargs()["password"] == "pw-SECRET-456"
    assert s.gong_access_key_secret is not None and s.gong_access_key_secret.reveal() == "gong-SECRET-789"
    assert s.postgres_dsn == SECRETS["SOPHIA_POSTGRES_DSN"]  # URLs keep their value; only their repr is masked


def test_plain_strings_given_to_settings_are_wrapped() -> None:
    s = load_settings({}).with_overrides(webhook_tokens=("tok-SECRET-1",), sentry_dsn="https://k-SECRET@x/1")
    assert isinstance(s.webhook_tokens[0], Secret) and isinstance(s.sentry_dsn, Secret)
    assert "SECRET" not in repr(s)


def test_a_secret_compares_by_value_and_never_prints() -> None:
    a, b = Secret("v-SECRET"), Secret("v-SECRET")
    assert a == b and hash(a) == hash(b) and a != Secret("other") and a != "v-SECRET"
    assert "SECRET" not in repr(a) + str(a) + f"{a}" + repr([a]) + repr({"k": a})
    assert bool(a) and not Secret("")
    assert pickle.loads(pickle.dumps(a)) == a


def test_urls_and_dsns_are_masked() -> None:
    assert mask_url("redis://:p4ss@h:6379/0") == "redis://:**********@h:6379/0"
    assert mask_url("postgresql://u:p4ss@h/db") == "postgresql://u:**********@h/db"
    assert mask_url("host=h password=p4ss dbname=d") == "host=h password=********** dbname=d"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"


@pytest.mark.parametrize("name", SECRET_VARIABLES)
def test_every_secret_variable_has_a_file_form(tmp_path: Path, name: str) -> None:
    value = SECRETS.get(name, "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----")
    path = tmp_path / "secret"
    path.write_text(value + "\n")  # as `echo` and most secret stores write it
    from_file = load_settings({f"{name}_FILE": str(path)})
    from_env = load_settings({name: value})
    assert repr(from_file) == repr(from_env)
    assert from_file == from_env


def test_a_variable_and_its_file_form_together_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("a")
    with pytest.raises(ConfigError, match="SOPHIA_WEBHOOK_TOKENS and SOPHIA_WEBHOOK_TOKENS_FILE are both set"):
        load_settings({"SOPHIA_WEBHOOK_TOKENS": "b", "SOPHIA_WEBHOOK_TOKENS_FILE": str(path)})


def test_an_unreadable_secret_file_names_the_variable_and_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=f"SOPHIA_SNOWFLAKE_PASSWORD_FILE: cannot read {missing}"):
        load_settings({"SOPHIA_SNOWFLAKE_PASSWORD_FILE": str(missing)})


def test_data_keys_must_be_fernet_keys() -> None:
    with pytest.raises(ConfigError, match="SOPHIA_DATA_KEYS entry 2 is not a Fernet key"):
        load_settings({"SOPHIA_DATA_KEYS": SECRETS["SOPHIA_DATA_KEYS"].split(",")[0] + ",short"})
    assert len(load_settings({"SOPHIA_DATA_KEYS": SECRETS["SOPHIA_DATA_KEYS"]}).data_keys) == 2


def test_ready_worker_seconds_and_reconcile_every() -> None:
    from sophia_tasks.settings import ConfigError, load_settings

    defaults = load_settings({})
    assert defaults.ready_worker_seconds == 60 and defaults.reconcile_every_seconds == 900
    given = load_settings({"SOPHIA_READY_WORKER_SECONDS": "20", "SOPHIA_RECONCILE_EVERY": "1h"})
    assert given.ready_worker_seconds == 20 and given.reconcile_every_seconds == 3600
    import pytest

    with pytest.raises(ConfigError, match="SOPHIA_RECONCILE_EVERY must be a positive duration"):
        load_settings({"SOPHIA_RECONCILE_EVERY": "often"})
