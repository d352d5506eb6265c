"""The `http:` section: where the dashboard listens and the token that guards it."""

from __future__ import annotations

import pytest

from i2vd.cli.commands import EX_CONFIG, main
from i2vd.config.load import ConfigError, HttpSettings, parse_config

MINIMAL = "output_dir: /srv/out\nwatch: [{path: /srv/in}]\n"


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="test.yaml")
    return caught.value.problems


def test_no_http_section_means_no_server_and_an_empty_one_the_defaults():
    assert parse_config(MINIMAL).http is None
    assert parse_config(MINIMAL + "http:\n").http == HttpSettings("127.0.0.1:8787", "127.0.0.1", 8787, None)


@pytest.mark.parametrize(
    "listen, host",
    [
        ("127.0.0.1:9000", "127.0.0.1"),
        ("localhost:9000", "localhost"),
        ("'[::1]:9000'", "::1"),
        ("127.3.4.5:9000", "127.3.4.5"),
    ],
)
def test_loopback_needs_no_token(listen, host):
    assert parse_config(MINIMAL + f"http: {{listen: {listen}}}\n").http == HttpSettings(
        listen.strip("'"), host, 9000, None
    )


@pytest.mark.parametrize("listen", ["0.0.0.0:8787", "'[::]:8787'", "192.168.1.5:8787", "studio-box:8787"])
def test_listening_beyond_loopback_without_a_token_is_a_config_error(listen):
    assert problems_of(MINIMAL + f"http: {{listen: {listen}}}\n") == [
        f"http.listen: {listen.strip(chr(39))} is beyond loopback: set token_file (or token), or listen on 127.0.0.1"
    ]


def test_and_exits_78(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(f"output_dir: {tmp_path}/out\nwatch: [{{path: {tmp_path}/in}}]\nhttp: {{listen: 0.0.0.0:8787}}\n")
    assert main(["run", "-c", str(path)]) == EX_CONFIG
    assert "http.listen: 0.0.0.0:8787 is beyond loopback" in capsys.readouterr().err


def test_a_token_file_is_read_with_surrounding_whitespace_stripped(tmp_path):
    (tmp_path / "token").write_text("\n  the-token \t\n")
    config = parse_config(MINIMAL + "http: {listen: 0.0.0.0:8787, token_file: token}\n", base_dir=tmp_path)
    assert config.http == HttpSettings("0.0.0.0:8787", "0.0.0.0", 8787, "the-token")


@pytest.mark.parametrize(
    "section, problem",
    [
        (
            "{listen: 0.0.0.0:8787, token_file: /nonexistent/token}",
            "http.token_file: cannot read /nonexistent/token: No such file or directory",
        ),
        ("{token_file: EMPTY}", "http.token_file: EMPTY is empty"),
        ("{token: '  '}", "http.token: is empty"),
        ("{token: a, token_file: /etc/hostname}", "http.token: give token or token_file, not both"),
        ("{listen: 8787}", "http.listen: 8787 is not a string"),
        ("{listen: 'nohost'}", "http.listen: 'nohost' is not host:port"),
        ("{listen: '127.0.0.1:99999'}", "http.listen: '127.0.0.1:99999' is not host:port"),
        ("{listne: x}", "http.listne: unknown key (did you mean 'listen'?)"),
    ],
)
def test_bad_http_sections_say_what_is_wrong(tmp_path, section, problem):
    (tmp_path / "EMPTY").write_text(" \n")
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL + f"http: {section}\n", base_dir=tmp_path)
    shown = [line.replace(str(tmp_path) + "/", "") for line in caught.value.problems]
    assert len(shown) == 1 and shown[0].startswith(problem), shown
