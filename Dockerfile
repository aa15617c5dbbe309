FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY pipeline ./pipeline
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENV PROVENANCE_DATA_DIR=/data
VOLUME /data
ENTRYPOINT ["provenance"]
