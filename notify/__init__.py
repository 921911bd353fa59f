"""Messages reaching people: outbox delivery channels (SMTP, webhooks), templates, reminders."""
