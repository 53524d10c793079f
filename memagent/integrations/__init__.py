"""memagent inside other frameworks; each module needs its extra (``pip install 'memagent[langchain]'``).

    langchain.py   MemagentRetriever (BaseRetriever over Memory.search), MemagentChatHistory
                   (BaseChatMessageHistory that writes each exchange into memory), memory_tools
                   (save, search, answer, forget; ``user_id`` injected by the application)
    langgraph.py   MemagentStore (langgraph's BaseStore: namespaces are user and agent scopes)

Nothing is imported here, so ``import memagent.integrations`` works without the extra.
"""
