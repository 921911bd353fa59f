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
        "nav.doors": "Doors and controllers",
        "nav.home": "Home",
        "doors.title": "Doors and controllers",
        "doors.live": "Live: this page refreshes every 5 seconds",
        "doors.controllers": "Controllers",
        "doors.controller": "Controller",
        "doors.state": "State",
        "doors.last_seen": "Last seen",
        "doors.doors": "Doors",
        "doors.door": "Door",
        "doors.now": "Allowed now",
        "doors.coming": "Coming grants",
        "doors.events": "Latest door events",
        "doors.no_events": "No door events yet.",
        "state.online": "online",
        "state.offline": "offline",
        "state.degraded": "degraded",
        "state.unknown": "unknown",
        "event.granted": "granted",
        "event.denied": "denied",
        "event.forced": "forced",
        "event.held_open": "held open",
        "event.tamper": "tamper",
        "event.unknown": "unknown",
        "forbidden.title": "This page is for managers and reception.",
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
        "nav.doors": "Portes et contrôleurs",
        "nav.home": "Accueil",
        "doors.title": "Portes et contrôleurs",
        "doors.live": "En direct : la page se rafraîchit toutes les 5 secondes",
        "doors.controllers": "Contrôleurs",
        "doors.controller": "Contrôleur",
        "doors.state": "État",
        "doors.last_seen": "Vu pour la dernière fois",
        "doors.doors": "Portes",
        "doors.door": "Porte",
        "doors.now": "Autorisés maintenant",
        "doors.coming": "Droits à venir",
        "doors.events": "Derniers événements de porte",
        "doors.no_events": "Aucun événement de porte pour l'instant.",
        "state.online": "en ligne",
        "state.offline": "hors ligne",
        "state.degraded": "dégradé",
        "state.unknown": "inconnu",
        "event.granted": "accordé",
        "event.denied": "refusé",
        "event.forced": "forcée",
        "event.held_open": "maintenue ouverte",
        "event.tamper": "sabotage",
        "event.unknown": "inconnu",
        "forbidden.title": "Cette page est réservée aux gestionnaires et à l'accueil.",
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
        "nav.doors": "Türen und Steuerungen",
        "nav.home": "Start",
        "doors.title": "Türen und Steuerungen",
        "doors.live": "Live: die Seite aktualisiert sich alle 5 Sekunden",
        "doors.controllers": "Steuerungen",
        "doors.controller": "Steuerung",
        "doors.state": "Zustand",
        "doors.last_seen": "Zuletzt gesehen",
        "doors.doors": "Türen",
        "doors.door": "Tür",
        "doors.now": "Jetzt berechtigt",
        "doors.coming": "Kommende Berechtigungen",
        "doors.events": "Letzte Türereignisse",
        "doors.no_events": "Noch keine Türereignisse.",
        "state.online": "online",
        "state.offline": "offline",
        "state.degraded": "gestört",
        "state.unknown": "unbekannt",
        "event.granted": "gewährt",
        "event.denied": "abgelehnt",
        "event.forced": "aufgebrochen",
        "event.held_open": "offen gehalten",
        "event.tamper": "Manipulation",
        "event.unknown": "unbekannt",
        "forbidden.title": "Diese Seite ist für Verwaltung und Empfang.",
    },
}


def pick_locale(user_locale: str | None, accept_language: str | None, default: str = "en") -> str:
    if user_locale in SUPPORTED_LOCALES:
        return user_locale
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
