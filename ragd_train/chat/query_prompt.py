"""The prompt that asks a chat model for search queries about a passage.

The query generator (``ragd_train.generate.llm.LLMQueryGenerator``) sends it, and the in-process
chat backend (:mod:`ragd_train.chat.local`) recognises it, to write each question separately with a
small model. ``QUERY_PROMPT_VERSION`` is part of the generation cache key: change it with the prompt.
"""

QUERY_PROMPT_VERSION = "queries-v1"
QUERY_PROMPT = """You write search queries for a document retrieval system.
Read the passage and write {n} different questions a user could type that this passage answers.
Use the user's own words, not the passage's phrasing; each question must be answerable from the passage alone.
Answer with a JSON array of {n} strings and nothing else.

Passage:
\"\"\"
{text}
\"\"\""""
