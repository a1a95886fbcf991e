"""Test-session setup: 8 forced CPU devices so multi-device code paths run on any machine."""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# converted params are cached per test session, never in the user's ~/.cache
os.environ.setdefault("JAXPROBE_CACHE_DIR", tempfile.mkdtemp(prefix="jaxprobe-params-"))
