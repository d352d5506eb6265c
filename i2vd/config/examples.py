"""The examples the config reference shows for `servers:` and `profiles:` (`i2vd config --example`)."""

EXAMPLE_PROFILES = {
    "default": {},
    "beach": {"prompt": "Waves crashing, camera panning left"},
    "mountain": {"prompt": "Sunrise over mountains, time-lapse effect"},
    "forest": {"prompt": "Leaves rustling in wind, gentle dolly forward"},
    "product-rotate": {
        "prompt": "Product rotating slowly on white background",
        "resolution": "512p",
        "frames": 16,
        "fps": 12,
        "steps": 60,
        "output": "sku_{{ stem }}_rotate.mp4",
    },
}
EXAMPLE_SERVERS = [
    {"name": "gpu0", "kind": "predict", "url": "http://127.0.0.1:7860", "gpu": {"index": 0}},
    {"name": "gpu1", "kind": "predict", "url": "http://127.0.0.1:7861", "gpu": {"index": 1}},
    {
        "name": "remote",
        "url": "http://gpu-box:7860",
        "gpu": {
            "source": "command",
            "command": "ssh gpu-box nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader,nounits",
        },
    },
]
