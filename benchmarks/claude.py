"""The two ways to drive Claude without aicli: the official SDK client, and a CLI per task."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, ResultMessage

from aicli.actors.claude_bin import find_claude
from benchmarks.fake import FakeApi


def sdk_client(fake: FakeApi, workdir: str) -> ClaudeSDKClient:
    """A client that runs the CLI as aicli does: same binary, default system prompt and tools.

    Left alone, the SDK sends an empty system prompt, which would make its requests
    ~40 KB lighter than aicli's and so not the same work.
    """
    env = fake.cli_env(fake.new_home())
    options = ClaudeAgentOptions(
        cli_path=find_claude(),
        cwd=workdir,
        env={key: env[key] for key in (*fake.variables, "HOME")},
        system_prompt={"type": "preset", "preset": "claude_code"},
    )
    return ClaudeSDKClient(options)


async def sdk_task(client: ClaudeSDKClient, prompt: str) -> ResultMessage:
    """One task: a query, then the messages up to its result."""
    await client.query(prompt)
    result = None
    async for message in client.receive_response():
        if isinstance(message, ResultMessage):
            result = message
    if result is None or result.is_error:
        raise RuntimeError(f"SDK task {prompt!r} failed: {result}")
    return result


def spawn_task(
    env: dict[str, str], workdir: str, prompt: str, resume: str | None
) -> dict[str, Any]:
    """What most wrappers do: ``claude -p`` per task, resuming the conversation by id."""
    argv = [find_claude(), "-p", prompt, "--output-format", "json"]
    if resume:
        argv.append(f"--resume={resume}")
    done = subprocess.run(
        argv, env=env, cwd=workdir, capture_output=True, text=True, timeout=120, check=False
    )
    try:
        result = json.loads(done.stdout)
    except ValueError:
        result = None
    if done.returncode != 0 or not isinstance(result, dict) or result.get("is_error"):
        raise RuntimeError(f"claude -p failed ({done.returncode}): {done.stderr[-500:]}")
    return result
