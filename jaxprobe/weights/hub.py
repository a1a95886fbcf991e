"""Turn a checkpoint argument (local directory or Hub id) into a local directory, safely.

Only weights in safetensors and plain-data files (JSON configs, tokenizer files, Jinja chat templates) are ever
fetched: no ``*.py`` modelling code and no pickled ``*.bin``/``*.pt`` weights, so nothing in a checkpoint can run.
"""

from __future__ import annotations

from pathlib import Path

from jaxprobe.errors import CheckpointError

ALLOW_PATTERNS = ["*.safetensors", "*.json", "*.txt", "*.model", "*.jinja", "tokenizer*"]
IGNORE_PATTERNS = ["*.py", "*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt", "*.h5", "*.msgpack"]
_OFFLINE_HELP = (
    "On a machine with Hub access run `hf download {repo} --include '*.safetensors' '*.json' "
    "'*.jinja' 'tokenizer*'` (it fills the standard Hugging Face cache, which jaxprobe reuses), or download the "
    "files into a directory and pass that directory instead of the Hub id."
)


def _looks_like_path(src: str) -> bool:
    """Paths the user meant as local (``./x``, ``/x``, ``~/x``, ``x/y/z``) must not be sent to the Hub."""
    return src.startswith((".", "/", "~")) or src.count("/") > 1 or "\\" in src


def _offline_error(repo: str, revision: str | None, cause: Exception) -> CheckpointError:
    at = f" at revision {revision!r}" if revision else ""
    return CheckpointError(
        f"cannot fetch {repo!r}{at} from the Hugging Face Hub: the Hub is unreachable or offline mode is on "
        f"(HF_HUB_OFFLINE), and it is not in the local Hugging Face cache ({type(cause).__name__}). "
        + _OFFLINE_HELP.format(repo=repo)
    )


def resolve_source(
    src: str | Path, revision: str | None = None, cache_dir: str | Path | None = None
) -> tuple[Path, str | None]:
    """``(local_dir, revision)``: a local directory as is (revision ``None``), else a Hub snapshot.

    For a Hub id the returned revision is the snapshot's commit hash, so a manifest can pin exactly what was
    loaded even when the user asked for a branch (or nothing).
    """
    path = Path(src).expanduser()
    if path.is_dir():
        if revision is not None:
            raise CheckpointError(f"--revision {revision!r} applies to Hub ids, but {src} is a local directory")
        return path, None
    if path.exists() or _looks_like_path(str(src)):
        raise CheckpointError(f"checkpoint {src} is not a directory: pass a checkpoint directory or a Hub id")
    return _download(str(src), revision, cache_dir)


def _download(repo: str, revision: str | None, cache_dir: str | Path | None) -> tuple[Path, str | None]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        local = snapshot_download(
            repo_id=repo,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=ALLOW_PATTERNS,
            ignore_patterns=IGNORE_PATTERNS,
        )
    except HFValidationError as err:
        raise CheckpointError(f"{repo!r} is neither a local directory nor a valid Hub id: {err}") from None
    except (GatedRepoError, RepositoryNotFoundError) as err:
        raise CheckpointError(
            f"Hub repository {repo!r} was not found or needs access rights (log in with `hf auth login` "
            f"after accepting its licence on the Hub): {type(err).__name__}"
        ) from None
    except RevisionNotFoundError:
        raise CheckpointError(f"revision {revision!r} does not exist in Hub repository {repo!r}") from None
    except LocalEntryNotFoundError as err:
        raise _offline_error(repo, revision, err) from None
    except HfHubHTTPError as err:
        raise CheckpointError(f"the Hugging Face Hub refused to serve {repo!r}: {err}") from None
    except OSError as err:  # connection refused, DNS failure, timeouts (all OSError subclasses)
        raise _offline_error(repo, revision, err) from None
    local_dir = Path(local)
    return local_dir, local_dir.name
