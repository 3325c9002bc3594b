"""The names of the `co` reference document, over agent-team's real modules.

    from claude_orchestrator.orchestrator import ClaudeOrchestrator
    ClaudeOrchestrator(config, "/project").run()
"""
