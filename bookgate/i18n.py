"""Portal strings in English, French and German; the user's locale, else the browser's, else en."""

from __future__ import annotations

from config.settings import SUPPORTED_LOCALES

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "login.title": "Sign in",
        "login.email": "Email",
        "login.password": "Password",
        "login.submit": "Sign in",
        "login.failed": "Wrong email or password.",
        "login.throttled": "Too many failed attempts. Try again later.",
        "home.hello": "Hello, {name}",
        "home.roles": "Your roles",
        "home.venues": "Places you can book",
        "nav.logout": "Sign out",
        "nav.api": "API documentation",
    },
    "fr": {
        "login.title": "Connexion",
        "login.email": "E-mail",
        "login.password": "Mot de passe",
        "login.submit": "Se connecter",
        "login.failed": "E-mail ou mot de passe incorrect.",
        "login.throttled": "Trop de tentatives échouées. Réessayez plus tard.",
        "home.hello": "Bonjour, {name}",
        "home.roles": "Vos rôles",
        "home.venues": "Lieux réservables",
        "nav.logout": "Se déconnecter",
        "nav.api": "Documentation de l'API",
    },
    "de": {
        "login.title": "Anmelden",
        "login.email": "E-Mail",
        "login.password": "Passwort",
        "login.submit": "Anmelden",
        "login.failed": "E-Mail oder Passwort falsch.",
        "login.throttled": "Zu viele Fehlversuche. Bitte später erneut versuchen.",
        "home.hello": "Hallo, {name}",
        "home.roles": "Ihre Rollen",
        "home.venues": "Buchbare Orte",
        "nav.logout": "Abmelden",
        "nav.api": "API-Dokumentation",
    },
}


def pick_locale(user_locale: str | None, accept_language: str | None, default: str = "en") -> str:
    if user_locale in SUPPORTED_LOCALES:
        return user_locale  # type: ignore[return-value]
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in SUPPORTED_LOCALES:
            return tag
    return default


def translator(locale: str):
    table = MESSAGES.get(locale, MESSAGES["en"])

    def t(key: str, **kwargs: object) -> str:
        text = table.get(key) or MESSAGES["en"].get(key, key)
        return text.format(**kwargs) if kwargs else text

    return t
