"""build_mapping: component type and position first (the one image input, the one free-text box), labels second.

The apps are /config documents in the shape every Gradio version serves (components with a type
and props.label, dependencies with input and output ids), read by the same code as a live app's.
"""

from __future__ import annotations

import pytest

from i2vd.render.backends.gradio_app import AppMismatch, endpoints_from_config
from i2vd.render.backends.gradio_mapping import build_mapping


def app_endpoint(*inputs: tuple[str, str | None, object]):
    """The one endpoint of an app whose inputs are (type, label, value) and whose output is a video."""
    components = [
        {"id": index + 1, "type": kind, "props": {"label": label, "value": value}}
        for index, (kind, label, value) in enumerate(inputs)
    ]
    video = len(inputs) + 1
    components.append({"id": video, "type": "video", "props": {"label": None}})
    config = {
        "components": components,
        "dependencies": [{"inputs": [c["id"] for c in components[:-1]], "outputs": [video], "api_name": None}],
    }
    (endpoint,) = endpoints_from_config(config)
    return endpoint


def fields(endpoint, inputs=None) -> list[tuple[str | None, str | None]]:
    return [(b.parameter.label, b.field) for b in build_mapping(endpoint, inputs).bindings]


def test_labels_in_any_language_the_text_box_takes_the_prompt_and_the_image_the_image():
    # VGen's I2VGen-XL app: the text box comes first in the layout, the endpoint takes the image first
    endpoint = app_endpoint(("image", "图片输入", None), ("textbox", "文本描述", ""))
    assert fields(endpoint) == [("图片输入", "image"), ("文本描述", "prompt")]


def test_no_labels_at_all():
    endpoint = app_endpoint(("textbox", None, ""), ("image", None, None), ("slider", None, 25))
    assert fields(endpoint) == [(None, "prompt"), (None, "image"), (None, None)]


def test_a_prompt_and_a_negative_prompt_are_told_apart_by_label():
    endpoint = app_endpoint(
        ("image", "Bild", None), ("textbox", "Prompt", ""), ("textbox", "Negative prompt", "blurry")
    )
    mapping = build_mapping(endpoint, None)
    assert [(b.parameter.label, b.field, b.value) for b in mapping.bindings] == [
        ("Bild", "image", None),
        ("Prompt", "prompt", None),
        ("Negative prompt", None, "blurry"),
    ]


def test_a_lone_negative_prompt_box_is_not_given_the_prompt():
    endpoint = app_endpoint(("image", "Input", None), ("textbox", "Negative prompt", "ugly"))
    assert fields(endpoint) == [("Input", "image"), ("Negative prompt", None)]
    assert "prompt" in build_mapping(endpoint, None).unused_fields


def test_a_text_box_named_for_another_field_keeps_that_field():
    endpoint = app_endpoint(("image", None, None), ("textbox", "Seed", "42"), ("textbox", "描述", ""))
    assert fields(endpoint) == [(None, "image"), ("Seed", "seed"), ("描述", "prompt")]


def test_two_unlabelled_text_boxes_are_not_guessed():
    endpoint = app_endpoint(("image", None, None), ("textbox", None, ""), ("textbox", None, ""))
    assert fields(endpoint) == [(None, "image"), (None, None), (None, None)]


def test_the_config_mapping_comes_before_the_type():
    endpoint = app_endpoint(("image", "图片输入", None), ("textbox", "文本描述", ""), ("textbox", "风格", ""))
    assert fields(endpoint, {1: {"value": "none"}, 2: "prompt"}) == [
        ("图片输入", "image"),
        ("文本描述", None),
        ("风格", "prompt"),
    ]


def test_two_images_still_need_a_name_or_the_config():
    endpoint = app_endpoint(("image", "first", None), ("image", "last", None))
    with pytest.raises(AppMismatch, match="match no i2vd field"):
        build_mapping(endpoint, None)
    assert fields(endpoint, {"first": "image", "last": {"value": None}}) == [("first", "image"), ("last", None)]
