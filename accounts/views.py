"""The sign-in page (passwords and/or single sign-on) and the API tokens page: list your
own tokens, make one (its key shown once), revoke one."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from accounts.tokens import MAX_TOKENS_PER_USER, token_create, token_is_live, token_revoke, tokens_for

NEW_KEY = "accounts.new_token"  # session key: the new token's id and key, until shown


class LoginView(auth_views.LoginView):
    """Django's sign-in page, with a single sign-on button when OIDC_ISSUER is set. With
    LOCAL_PASSWORDS=0 the page offers SSO only and a posted password is refused (403)."""

    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if not settings.LOCAL_PASSWORDS:
            response = self.render_to_response(self.get_context_data(refused=True))
            response.status_code = 403
            return response
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs: object) -> dict:
        return {**super().get_context_data(**kwargs), "sso": bool(settings.OIDC_ISSUER),
                "local_passwords": settings.LOCAL_PASSWORDS,
                "sso_failed": self.request.GET.get("sso") == "failed"}


@never_cache  # the page that shows a new key must not be kept anywhere
@login_required
def tokens_page(request: HttpRequest) -> HttpResponse:
    """POST makes a token and redirects (a reload must not make another); the next GET
    shows its key, once: it leaves the session as it is shown."""
    if request.method == "POST":
        token, key = token_create(user=request.user, name=request.POST.get("name", "")[:100])
        request.session[NEW_KEY] = [token.pk, key]
        return redirect("account-tokens")
    tokens = list(tokens_for(user=request.user))
    for token in tokens:
        token.live = token_is_live(token, user=request.user)
    new_id, key = request.session.pop(NEW_KEY, [None, None])
    return render(request, "accounts/tokens.html", {
        "tokens": tokens, "created": next((t for t in tokens if t.pk == new_id), None),
        "key": key if new_id is not None else None,
        "max_tokens": MAX_TOKENS_PER_USER, "ttl_days": settings.API_TOKEN_TTL_DAYS,
    })


@login_required
@require_POST
def token_revoke_view(request: HttpRequest, token_id: int) -> HttpResponse:
    if not token_revoke(user=request.user, token_id=token_id):
        raise Http404("No such token.")
    messages.success(request, "Token revoked.")
    return redirect("account-tokens")
