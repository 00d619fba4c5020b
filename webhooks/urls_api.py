from django.urls import path

from webhooks import api

urlpatterns = [
    path("projects/<int:project_id>/webhooks", api.WebhookListCreate.as_view(), name="webhook-list"),
    path("webhooks/<int:hook_id>", api.WebhookDetail.as_view(), name="webhook-detail"),
    path("webhooks/<int:hook_id>/deliveries", api.WebhookDeliveries.as_view(), name="webhook-deliveries"),
    path("webhook-deliveries/<int:delivery_id>/redeliver", api.DeliveryRedeliver.as_view(),
         name="webhook-redeliver"),
]
