# One image for the API and the workers; TORCH_BUILD picks the torch wheel (cpu, or cu124 for GPUs).
FROM python:3.11-slim
ARG TORCH_BUILD=cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY docker docker
COPY ntk ntk
# the SDK: `ntk kernel/predict --url` computes through it
COPY clients/python clients/python
RUN docker/install.sh "$TORCH_BUILD" && useradd --system --no-create-home ntk
USER ntk
EXPOSE 8000
CMD ["ntk", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "0"]
