"""Profiles, templates and sidecars: what prompt and parameters a job gets."""

from __future__ import annotations

import re
import threading
from pathlib import Path, PurePosixPath

import pytest

from i2vd.config.load import Config, parse_config
from i2vd.config.profiles import (
    ProfileError,
    ResolvedProfile,
    TemplateBoundError,
    render,
    resolve_profile,
    subject_of,
    template_variables,
)
from i2vd.config.sidecars import SidecarError, SidecarSettings, read_sidecars, sidecar_files
from i2vd.config.templates import TemplateLimitError, render_bounded
from i2vd.core.images import ImageFacts
from tests.support.fakes import write_text as write

CONFIG_TEXT = """
output_dir: /out
watch: [{path: /in}]
profiles:
  default: {fps: 8}
  beach: {prompt: "Waves crashing, camera panning left", fps: 12}
  product-rotate: {prompt: "Product {{ stem }} rotating", output: "sku_{{ stem }}_rotate.mp4", steps: 60}
"""
SHA = "f" * 64
GOLDEN = PurePosixPath("dogs/golden_retriever-2.jpg")


@pytest.fixture
def config() -> Config:
    return parse_config(CONFIG_TEXT)


def with_profile(**fields: str) -> Config:
    body = ", ".join(f"{key}: {value!r}" for key, value in fields.items())
    return parse_config(f"output_dir: /out\nwatch: [{{path: /in}}]\nprofiles:\n  p: {{{body}}}\n")


def resolve_with(template: str, path: PurePosixPath = GOLDEN, facts: ImageFacts | None = None) -> ResolvedProfile:
    return resolve_profile(with_profile(prompt=template), path, facts, "p")


# -- variables and rendering ---------------------------------------------------------


@pytest.mark.parametrize(
    ("stem", "subject"),
    [("golden_retriever-2", "golden retriever 2"), ("IMG_0001", "img 0001"), ("a__b--c", "a b c"), ("Beach", "beach")],
)
def test_subject_is_the_stem_as_words(stem: str, subject: str) -> None:
    assert subject_of(stem) == subject


def test_the_default_prompt_describes_the_subject(config: Config) -> None:
    resolved = resolve_profile(config, GOLDEN, None)
    assert resolved.name == "default"
    assert resolved.prompt == "A golden retriever 2 scene with smooth motion"
    assert resolved.params == {"resolution": "512p", "frames": 16, "fps": 8, "steps": 50, "guidance": 9.0, "seed": None}
    assert resolved.output_name is None


def test_a_named_profile_inherits_from_default(config: Config) -> None:
    resolved = resolve_profile(config, GOLDEN, None, "beach")
    assert resolved.prompt == "Waves crashing, camera panning left"
    assert resolved.params["fps"] == 12 and resolved.params["steps"] == 50


def test_template_variables_hold_the_file_and_exif_facts() -> None:
    facts = ImageFacts(64, 48, "JPEG", exif_date="2024:06:01 10:00:00", exif_camera="Canon EOS R5")
    variables = template_variables(GOLDEN, facts, {"mood": "calm"})
    assert variables == {
        "stem": "golden_retriever-2",
        "subject": "golden retriever 2",
        "filename": "golden_retriever-2.jpg",
        "folder": "dogs",
        "caption": None,
        "exif_date": "2024:06:01 10:00:00",
        "exif_camera": "Canon EOS R5",
        "mood": "calm",
    }
    assert template_variables(PurePosixPath("top.jpg"), None)["folder"] == ""


def test_every_variable_renders_in_a_prompt() -> None:
    facts = ImageFacts(64, 48, "JPEG", exif_date="2024:06:01", exif_camera="Canon")
    resolved = resolve_with(
        "{{ stem }}|{{ subject }}|{{ filename }}|{{ folder }}|{{ exif_date }}|{{ exif_camera }}", facts=facts
    )
    assert resolved.prompt == "golden_retriever-2|golden retriever 2|golden_retriever-2.jpg|dogs|2024:06:01|Canon"


def test_an_unknown_variable_is_an_error_naming_it() -> None:
    with pytest.raises(ProfileError) as caught:
        resolve_with("A {{ subjcet }} scene")
    message = str(caught.value)
    assert "subjcet" in message
    assert "profile p prompt" in message
    assert "subject" in message  # the known variables are listed


def test_a_prompt_that_renders_empty_is_an_error() -> None:
    with pytest.raises(ProfileError, match="renders empty"):
        resolve_with("{{ caption or '' }}  ")


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ stem.__class__.__base__.__subclasses__() }}",
        "{{ stem.__len__() }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_the_sandbox_blocks_attribute_tricks(template: str) -> None:
    with pytest.raises(ProfileError) as caught:
        resolve_with(template)
    message = str(caught.value)
    assert "profile p prompt" in message
    assert "<class" not in message and "__globals__" not in message.split(":", 1)[0]


def test_the_sandbox_error_is_a_security_error() -> None:
    with pytest.raises(ProfileError, match="unsafe"):
        render("{{ ''.__class__ }}", {}, "test")


def test_rendering_strips_surrounding_whitespace() -> None:
    assert render("  hello {{ name }}\n", {"name": "you"}, "test") == "hello you"


# -- output names ------------------------------------------------------------------------


def test_the_output_template_renders_a_file_name(config: Config) -> None:
    resolved = resolve_profile(config, PurePosixPath("products/123.jpg"), None, "product-rotate")
    assert resolved.output_name == "sku_123_rotate.mp4"
    assert resolved.prompt == "Product 123 rotating"


def test_an_output_name_without_mp4_gets_it() -> None:
    resolved = resolve_profile(with_profile(output="clip_{{ stem }}"), GOLDEN, None, "p")
    assert resolved.output_name == "clip_golden_retriever-2.mp4"


@pytest.mark.parametrize(
    "template", ["../{{ stem }}.mp4", "sub/{{ stem }}.mp4", "/etc/{{ stem }}.mp4", "..", "{{ folder }}/x.mp4"]
)
def test_the_output_template_must_be_a_plain_file_name(template: str) -> None:
    with pytest.raises(ProfileError, match="must be a plain file name"):
        resolve_profile(with_profile(output=template), GOLDEN, None, "p")


def test_an_output_template_that_renders_empty_is_refused() -> None:
    with pytest.raises(ProfileError, match="must be a plain file name"):
        resolve_profile(with_profile(output="{{ caption or '' }}"), GOLDEN, None, "p")


def test_an_unknown_profile_is_an_error_listing_the_profiles(config: Config) -> None:
    with pytest.raises(ProfileError, match="unknown profile 'sea'.*beach, default, product-rotate"):
        resolve_profile(config, GOLDEN, None, "sea")


# -- the idempotency key -------------------------------------------------------------------


def test_the_idempotency_key_depends_on_prompt_params_and_content_only() -> None:
    params = {"resolution": "512p", "frames": 16, "fps": 8, "steps": 50, "guidance": 9.0, "seed": None}
    base = ResolvedProfile("default", "A dog", params, None)
    key = base.idempotency_key(SHA)
    assert len(key) == 64 and key == base.idempotency_key(SHA)
    # not the profile's name: two profiles asking for the same thing are one job
    assert ResolvedProfile("beach", "A dog", dict(params), None).idempotency_key(SHA) == key
    assert ResolvedProfile("default", "A dog", dict(reversed(params.items())), None).idempotency_key(SHA) == key
    assert ResolvedProfile("default", "A cat", params, None).idempotency_key(SHA) != key
    assert ResolvedProfile("default", "A dog", {**params, "fps": 12}, None).idempotency_key(SHA) != key
    assert ResolvedProfile("default", "A dog", {**params, "seed": 1}, None).idempotency_key(SHA) != key
    assert base.idempotency_key("e" * 64) != key


def test_the_same_image_under_another_folder_or_name_keeps_its_key_when_the_prompt_does_not_use_them(
    config: Config,
) -> None:
    first = resolve_profile(config, PurePosixPath("a/one.jpg"), None, "beach")
    second = resolve_profile(config, PurePosixPath("b/c/two.png"), None, "beach")
    assert first.idempotency_key(SHA) == second.idempotency_key(SHA)


# -- sidecars ------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    (root / "beach" / "day1").mkdir(parents=True)
    return root


def test_no_sidecars_means_no_settings(root: Path) -> None:
    assert read_sidecars(root, root / "beach" / "day1" / "img.jpg") == SidecarSettings(None, {}, {}, ())


def test_sidecar_files_run_from_the_root_down_then_the_image(root: Path) -> None:
    image = root / "beach" / "day1" / "img.jpg"
    files = [
        write(root / "i2vd.yaml", "fps: 4\n"),
        write(root / "beach" / "day1" / "i2vd.yaml", "fps: 6\n"),
        write(root / "beach" / "day1" / "img.jpg.yaml", "fps: 8\n"),
    ]
    write(root / "beach" / "day1" / "other.jpg.yaml", "fps: 10\n")
    assert sidecar_files(root, image) == files


def test_deeper_folder_sidecars_merge_over_shallower_ones(root: Path, config: Config) -> None:
    write(root / "i2vd.yaml", "profile: beach\nvars: {mood: calm, place: coast}\nfps: 10\nsteps: 20\n")
    write(root / "beach" / "i2vd.yaml", "vars: {place: Brighton}\nsteps: 30\n")
    write(root / "beach" / "day1" / "i2vd.yaml", "frames: 24\n")
    image = root / "beach" / "day1" / "img.jpg"
    settings = read_sidecars(root, image)
    assert settings.profile == "beach"
    assert settings.variables == {"mood": "calm", "place": "Brighton"}
    assert settings.overrides == {"fps": 10, "steps": 30, "frames": 24}
    assert len(settings.sources) == 3
    resolved = resolve_profile(config, PurePosixPath("beach/day1/img.jpg"), None, "default", settings)
    assert resolved.name == "beach"
    assert resolved.prompt == "Waves crashing, camera panning left"
    assert (resolved.params["fps"], resolved.params["steps"], resolved.params["frames"]) == (10, 30, 24)


def test_the_nearest_sidecar_picks_the_profile(root: Path) -> None:
    write(root / "i2vd.yaml", "profile: beach\n")
    write(root / "beach" / "i2vd.yaml", "profile: product-rotate\n")
    assert read_sidecars(root, root / "beach" / "day1" / "x.jpg").profile == "product-rotate"
    assert read_sidecars(root, root / "x.jpg").profile == "beach"


def test_an_image_sidecar_wins_over_folder_sidecars(root: Path, config: Config) -> None:
    write(root / "beach" / "i2vd.yaml", "profile: beach\nprompt: 'Folder prompt'\nfps: 10\nvars: {mood: calm}\n")
    write(root / "beach" / "IMG_01.jpg.yaml", "prompt: 'A {{ mood }} {{ subject }} at dusk'\nvars: {mood: stormy}\n")
    own = read_sidecars(root, root / "beach" / "IMG_01.jpg")
    resolved = resolve_profile(config, PurePosixPath("beach/IMG_01.jpg"), None, "default", own)
    assert resolved.name == "beach"
    assert resolved.prompt == "A stormy img 01 at dusk"
    assert resolved.params["fps"] == 10
    neighbour = read_sidecars(root, root / "beach" / "IMG_02.jpg")
    assert (
        resolve_profile(config, PurePosixPath("beach/IMG_02.jpg"), None, "default", neighbour).prompt == "Folder prompt"
    )


def test_an_image_sidecar_applies_without_a_root(tmp_path: Path) -> None:
    image = tmp_path / "x.jpg"
    assert read_sidecars(None, image).sources == ()
    write(tmp_path / "i2vd.yaml", "fps: 5\n")  # folder sidecars need a root to know where to stop
    write(tmp_path / "x.jpg.yaml", "fps: 6\n")
    assert read_sidecars(None, image).overrides == {"fps": 6}


def test_sidecar_vars_are_template_variables(root: Path, config: Config) -> None:
    write(
        root / "i2vd.yaml",
        "prompt: '{{ product }} on {{ vars.surface }}, {{ subject }}'\nvars: {product: Teapot, surface: marble}\n",
    )
    settings = read_sidecars(root, root / "tea_pot.jpg")
    assert (
        resolve_profile(config, PurePosixPath("tea_pot.jpg"), None, "default", settings).prompt
        == "Teapot on marble, tea pot"
    )


def test_a_sidecar_profile_that_does_not_exist_names_the_sidecar(root: Path, config: Config) -> None:
    sidecar = write(root / "beach" / "i2vd.yaml", "profile: beech\n")
    settings = read_sidecars(root, root / "beach" / "x.jpg")
    with pytest.raises(ProfileError) as caught:
        resolve_profile(config, PurePosixPath("beach/x.jpg"), None, "default", settings)
    assert "unknown profile 'beech'" in str(caught.value)
    assert str(sidecar) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fsp: 10\n", "fsp: unknown key (did you mean 'fps'?)"),
        ("fps: 40\n", "fps: 40 is above 24"),
        ("resolution: 4k\n", "resolution: '4k' is not one of 256p, 512p, 768p, 1024p"),
        ("vars: [a, b]\n", "vars: a list is not a mapping"),
        ("prompt: '{{ stem'\n", "prompt: template error"),
        ("server: {url: 'http://evil:7860'}\n", "server: not allowed in a sidecar"),
        ("output_dir: /etc\n", "output_dir: not allowed in a sidecar"),
        ("watch: [{path: /}]\n", "watch: not allowed in a sidecar"),
    ],
)
def test_a_bad_sidecar_names_the_file_and_the_key(root: Path, text: str, expected: str) -> None:
    sidecar = write(root / "beach" / "i2vd.yaml", text)
    with pytest.raises(ProfileError) as caught:
        read_sidecars(root, root / "beach" / "x.jpg")
    message = str(caught.value)
    assert message.startswith(f"sidecar {sidecar}: ")
    assert expected in message


def test_every_problem_of_a_sidecar_is_reported(root: Path) -> None:
    write(root / "x.jpg.yaml", "fps: 40\nframes: 2\nserver: {}\n")
    message = str(pytest.raises(ProfileError, read_sidecars, root, root / "x.jpg").value)
    assert (
        "fps: 40 is above 24" in message
        and "frames: 2 is below 8" in message
        and "server: not allowed in a sidecar" in message
    )


def test_a_sidecar_that_is_not_yaml_or_not_a_mapping_is_an_error(root: Path) -> None:
    sidecar = write(root / "i2vd.yaml", "fps: [\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        read_sidecars(root, root / "x.jpg")
    write(sidecar, "- fps\n")
    with pytest.raises(ProfileError, match="is not a mapping"):
        read_sidecars(root, root / "x.jpg")
    sidecar.write_bytes(b"fps: \xff\n")
    with pytest.raises(ProfileError, match="cannot read"):
        read_sidecars(root, root / "x.jpg")


def test_an_empty_sidecar_changes_nothing(root: Path) -> None:
    write(root / "i2vd.yaml", "")
    settings = read_sidecars(root, root / "x.jpg")
    assert (settings.profile, settings.variables, settings.overrides) == (None, {}, {})
    assert len(settings.sources) == 1


def test_a_sidecar_change_changes_the_key(root: Path, config: Config) -> None:
    image = root / "x.jpg"
    before = resolve_profile(config, PurePosixPath("x.jpg"), None, "default", read_sidecars(root, image))
    write(root / "i2vd.yaml", "steps: 70\n")
    after = resolve_profile(config, PurePosixPath("x.jpg"), None, "default", read_sidecars(root, image))
    assert before.idempotency_key(SHA) != after.idempotency_key(SHA)


def test_sidecar_vars_with_a_key_that_is_not_a_name_are_a_profile_error(root: Path, config: Config) -> None:
    write(root / "i2vd.yaml", "vars: {1: one}\n")
    with pytest.raises(ProfileError, match="vars"):
        settings = read_sidecars(root, root / "x.jpg")
        resolve_profile(config, PurePosixPath("x.jpg"), None, "default", settings)


# -- untrusted templates: bounded work and output (SPEC "Reliability") ---------------------

ATTACKS = {
    "string repetition": "{{ 'a' * 3000000000 }}",
    "list repetition": "{{ [1] * 10**9 }}",
    "printf width in the format filter": "{{ '%999999999s'|format(1) }}",
    "printf width in %": "{{ '%999999999s' % 1 }}",
    "printf reusing a big value": "{% set x = 'a' * 60000 %}{{ ('%(a)s' * 100) % {'a': x} }}",
    "center filter": "{{ 'a'|center(10**9) }}",
    "indent filter": "{{ 'a\nb'|indent(10**9) }}",
    "huge range joined": "{{ range(10**9)|join }}",
    "join with a big separator": "{{ range(60000)|join('x' * 1000) }}",
    "str.format width": "{{ '{:>999999999}'.format(1) }}",
    "str.format nested width": "{{ '{0:{1}}'.format('a', 10**9) }}",
    "str.ljust": "{{ 'x'.ljust(10**9) }}",
    "str.replace of every gap": "{% set x = 'a' * 60000 %}{{ x.replace('a', x) }}",
    "replace filter": "{% set x = 'a' * 60000 %}{{ x|replace('', x) }}",
    "wordwrap with a big wrapstring": "{% set x = 'a ' * 30000 %}{{ x|wordwrap(1, wrapstring=x) }}",
    "concatenation": "{% set x = 'a' * 60000 %}{{ x ~ x ~ x }}",
    "doubling in a loop": (
        "{% set ns = namespace(x='a') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}"
    ),
    "shared references": (
        "{% set a = ['a' * 1000] %}{% set b = [a,a,a,a,a,a,a,a] %}{% set c = [b,b,b,b,b,b,b,b] %}{{ [c,c] }}"
    ),
    "a macro's output in a loop": (
        "{% macro m() %}{% for i in range(60000) %}AAAAAAAAAA{% endfor %}{% endmacro %}{{ m() }}"
    ),
    "a set block": "{% set x %}{% for i in range(60000) %}abc{% endfor %}{% endset %}{{ x|length }}",
    "a filter block": "{% filter upper %}{% for i in range(60000) %}abc{% endfor %}{% endfilter %}",
    "batch padding": "{{ [1]|batch(10**9, 'x')|list }}",
    "huge power": "{{ 9 ** (9 ** 9) }}",
    "deep nesting": "{% set ns = namespace(a=1) %}{% for i in range(1000) %}{% set ns.a = [ns.a] %}{% endfor %}",
    "recursive macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "recursive block": "{% block a %}{{ self.a() }}{% endblock %}",
    "recursive loop": "{% for c in ['ab'] recursive %}{{ loop(['ab']) }}{% endfor %}",
    "nested loops": "{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}x",
    "loops over a string": (
        "{% set x = 'a' * 60000 %}{% for i in x %}{% for j in x %}{% if j == 'b' %}{% endif %}{% endfor %}{% endfor %}x"
    ),
    "a long rendered prompt": "{% for i in range(60000) %}a{% endfor %}",
    "a generator read whole": "{{ range(60000)|map('center', 60000)|list|length }}",
    "a generator joined": "{{ ''.join(range(60000)|map('center', 60000)) }}",
    "a Markup method": "{{ ('a'|safe).center(10**9) }}",
    "a huge template": "x" * 20000,
}


@pytest.mark.parametrize("template", ATTACKS.values(), ids=ATTACKS.keys())
def test_a_template_that_breaks_a_bound_is_a_clear_error(template: str) -> None:
    with pytest.raises(TemplateBoundError) as caught:
        resolve_with(template)
    message = str(caught.value)
    assert message.startswith("profile p prompt: ")
    assert any(words in message for words in ("at most", "too much template work", "deeper than", "bits")), message


@pytest.mark.parametrize(
    ("template", "refused"),
    [
        ("{{ 'abc'.translate({97: 'x' * 60000}) }}", "str.translate() is not allowed"),
        ("{{ (10).to_bytes(10**9, 'big') }}", "int.to_bytes() is not allowed"),
        ("{{ lipsum(10**7) }}", "'lipsum' is undefined"),
        ("{{ [1]|pprint }}", "No filter named 'pprint'"),
        ("{{ 1 / 0 }}", "ZeroDivisionError: division by zero"),
    ],
)
def test_dangerous_or_broken_calls_are_refused_with_a_reason(template: str, refused: str) -> None:
    with pytest.raises(ProfileError, match=re.escape(refused)):
        resolve_with(template)


def test_ordinary_templates_still_render() -> None:
    template = (
        "{{ subject|title }}, {{ range(3)|join(', ') }}, {{ '%-4s|'|format('ab') }}{{ '{:>4}'.format('cd') }}, "
        "{{ 'x'|center(5) }}|{{ stem.replace('_', ' ') }}, {% for "
        "word in subject.split() %}{{ loop.index }}{% endfor %}, "
        "{{ dict(a=1)|tojson }} {{ ('ab' * 2) ~ ([1] + [2])|string }} {{ 2.5 * 100000 }} {{ 2 ** 10 }} {{ 7 % 4 }}"
    )
    assert resolve_with(template).prompt == (
        'Golden Retriever 2, 0, 1, 2, ab  |  cd,   x  |golden retriever-2, 123, {"a": 1} abab[1, 2] 250000.0 1024 3'
    )


def test_a_prompt_may_render_4_kb_and_no_more() -> None:
    assert len(resolve_with("{{ 'é' * 2048 }}").prompt.encode()) == 4096
    with pytest.raises(TemplateBoundError, match="renders 4,098 bytes; at most 4,096"):
        resolve_with("{{ 'é' * 2049 }}")


def test_an_output_name_may_be_255_bytes_and_no_more() -> None:
    assert resolve_profile(with_profile(output="{{ 'n' * 251 }}"), GOLDEN, None, "p").output_name == "n" * 251 + ".mp4"
    with pytest.raises(TemplateBoundError, match="longer than 255 bytes"):
        resolve_profile(with_profile(output="{{ 'n' * 252 }}"), GOLDEN, None, "p")
    with pytest.raises(TemplateBoundError, match="renders 260 bytes; at most 255"):
        resolve_profile(with_profile(output="{{ 'n' * 256 }}.mp4"), GOLDEN, None, "p")


def test_the_time_limit_holds_in_a_worker_thread() -> None:
    caught: list[BaseException] = []

    def render_in_thread() -> None:
        loops = "{% for i in range(60000) %}{% for j in range(60000) %}{% endfor %}{% endfor %}x"
        try:
            render_bounded(loops, {}, 4096, seconds=0.2, steps=10**12)  # only the clock can stop it
        except TemplateLimitError as error:
            caught.append(error)

    worker = threading.Thread(target=render_in_thread)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert len(caught) == 1 and "rendering took longer than 0.2 s" in str(caught[0])


def test_a_bound_broken_by_a_sidecar_template_names_that_sidecar(root: Path, config: Config) -> None:
    sidecar = write(root / "beach" / "i2vd.yaml", "prompt: \"{{ 'a' * 3000000000 }}\"\n")
    settings = read_sidecars(root, root / "beach" / "day1" / "x.jpg")
    with pytest.raises(SidecarError) as caught:
        resolve_profile(config, PurePosixPath("beach/day1/x.jpg"), None, "default", settings)
    assert caught.value.file == str(sidecar)
    assert caught.value.problems[0].startswith(
        "prompt: profile default prompt: a * repetition would be 3,000,000,000 characters"
    )


def test_a_bound_broken_by_sidecar_vars_names_the_sidecar_that_set_them(root: Path) -> None:
    config = with_profile(prompt="{{ words }} {{ words }}")
    sidecar = write(root / "beach" / "i2vd.yaml", f"vars: {{words: {'w' * 3000}}}\n")
    settings = read_sidecars(root, root / "beach" / "x.jpg")
    with pytest.raises(SidecarError) as caught:
        resolve_profile(config, PurePosixPath("beach/x.jpg"), None, "p", settings)
    assert caught.value.file == str(sidecar) and caught.value.problems[0].startswith(
        "vars: profile p prompt: renders 6,001 bytes"
    )


def test_a_bound_broken_by_a_caption_alone_fails_the_image(config: Config) -> None:
    with pytest.raises(TemplateBoundError) as caught:
        resolve_profile(config, GOLDEN, None, "default", SidecarSettings(), caption="c" * 5000)
    assert not isinstance(caught.value, SidecarError)
    assert "renders 5,000 bytes; at most 4,096" in str(caught.value)


def test_sidecar_vars_that_expand_beyond_64_kb_are_refused(root: Path) -> None:
    bomb = "vars:\n  a: &a ['xxxxxxxxxxxxxxxx', 'xxxxxxxxxxxxxxxx']\n"
    bomb += "".join(
        f"  {name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}]\n" for prev, name in zip("abcdefg", "bcdefgh")
    )
    sidecar = write(root / "i2vd.yaml", bomb)
    with pytest.raises(SidecarError) as caught:
        read_sidecars(root, root / "x.jpg")
    assert caught.value.file == str(sidecar) and caught.value.problems[0].startswith("vars: vars would be")


def test_a_template_sees_jinja_s_globals_and_a_render_leaves_nothing_for_the_next() -> None:
    """Compiled templates keep their globals as a plain dict (a ChainMap walked in Python cost a quarter of a short
    prompt's render): range, dict, namespace and cycler still work, and a `set` in one render is not in the next."""
    source = "{% set counter = namespace(n=0) %}{% for i in range(3) %}{% set counter.n = counter.n + i %}{% endfor %}"
    source += "{{ counter.n }} {{ dict(a=subject)['a'] }} {{ cycler('x', 'y').next() }}{% set leaked = 1 %}"
    assert render_bounded(source, {"subject": "dog"}, 4096) == "3 dog x"
    assert render_bounded(source, {"subject": "cat"}, 4096) == "3 cat x"
    with pytest.raises(Exception, match="leaked"):
        render_bounded("{{ leaked }}", {}, 4096)
