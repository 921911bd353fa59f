"""The timeline engine: wake-ups, due-transition dispatch, reconcile, reminders, expiries, retention."""
