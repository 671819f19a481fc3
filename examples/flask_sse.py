"""The original SteadyText Flask service, unchanged except for the import (and JSON-safe SSE encoding).

pip install flask && flask --app examples.flask_sse run
"""

import json
from collections.abc import Iterator

from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue

import steadytext_async as steadytext

app = Flask(__name__)


@app.route("/generate", methods=["POST"])
def generate_text() -> ResponseReturnValue:
    data = request.get_json()
    prompt = data.get("prompt", "")
    seed = data.get("seed", 42)
    max_tokens = data.get("max_tokens", 512)
    if not prompt:
        return jsonify({"error": "No prompt provided"}), 400
    try:
        result = steadytext.generate(prompt, seed=seed, max_new_tokens=max_tokens)
    except steadytext.InvalidRequestError as e:
        return jsonify({"error": str(e)}), 400
    assert isinstance(result, str)
    return jsonify({"prompt": prompt, "seed": seed, "generated_text": result, "token_count": len(result.split())})


@app.route("/generate/stream", methods=["POST"])
def stream_text() -> Response:
    data = request.get_json()
    prompt = data.get("prompt", "")
    seed = data.get("seed", 42)
    max_tokens = data.get("max_tokens", 512)

    def generate() -> Iterator[str]:
        yield 'data: {"status": "starting"}\n\n'
        for token in steadytext.generate_iter(prompt, seed=seed, max_new_tokens=max_tokens):
            yield f"data: {json.dumps({'token': token})}\n\n"
        yield 'data: {"status": "complete"}\n\n'

    return Response(generate(), mimetype="text/event-stream")
