"""The stock `openai` Python SDK against `memkern serve` (run by tests/openai.rs).

Usage: openai_sdk.py BASE_URL API_KEY. Prints one JSON line with what it saw;
any failed check raises (exit status 1).
"""

import json
import sys

import openai

base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=300)
seen = {"sdk": openai.__version__}

# models.list() (404'd before /v1/models existed) and models.retrieve().
ids = [m.id for m in client.models.list().data]
assert len(ids) == 1, ids
assert client.models.retrieve(ids[0]).id == ids[0]
try:
    client.models.retrieve("gpt-17")
    raise AssertionError("an unknown model was found")
except openai.NotFoundError as e:
    seen["unknown_model"] = e.status_code

# A plain completion answered from the user's memories (not remembered).
no_memory = {"memkern": {"remember": False, "snapshots": False}}
ask = [{"role": "user", "content": "Where does my sister live?"}]
plain = client.chat.completions.create(
    model=ids[0], messages=ask, max_tokens=24, extra_body=no_memory
)
answer = plain.choices[0].message.content
assert "Porto" in answer, answer
assert plain.choices[0].finish_reason in ("stop", "length")
seen["answer"] = answer

# The same, streamed: the deltas concatenate to the same answer.
stream = client.chat.completions.create(
    model=ids[0], messages=ask, max_tokens=24, stream=True, extra_body=no_memory
)
streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
assert streamed == answer, (streamed, answer)

# A multi-turn conversation that needs an earlier message (nothing else
# tells the model the dog's name: without the history it cannot know it).
question = {"role": "user", "content": "What is my dog called?"}
convo = client.chat.completions.create(
    model=ids[0],
    messages=[
        {"role": "system", "content": "Answer from the conversation."},
        {"role": "user", "content": "My dog is called Rex."},
        {"role": "assistant", "content": "Rex is a great name for a dog!"},
        question,
    ],
    max_tokens=16,
    extra_body=no_memory,
)
seen["multi_turn"] = convo.choices[0].message.content
assert "Rex" in seen["multi_turn"], seen["multi_turn"]
alone = client.chat.completions.create(
    model=ids[0], messages=[question], max_tokens=16, extra_body=no_memory
)
seen["without_history"] = alone.choices[0].message.content
assert "Rex" not in seen["without_history"], seen["without_history"]

# A stop sequence ends the answer and is not part of it.
stopped = client.chat.completions.create(
    model=ids[0], messages=ask, max_tokens=24, stop=["Porto"], extra_body=no_memory
)
seen["stopped"] = stopped.choices[0].message.content
assert "Porto" not in seen["stopped"] and stopped.choices[0].finish_reason == "stop"

# An unsupported parameter is refused, not ignored.
try:
    client.chat.completions.create(model=ids[0], messages=ask, n=2)
    raise AssertionError("n=2 was accepted")
except openai.BadRequestError as e:
    seen["refused"] = e.status_code
    assert "`n` must be 1" in str(e), str(e)

print(json.dumps(seen))
