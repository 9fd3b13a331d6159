"""A Spark job over `ust export --format parquet`: events per name and per thread, latest first.

    ust export TRACE --format parquet -o events
    python examples/spark_parquet.py events        # needs pyspark (and a Java runtime)

Spark reads the whole dataset with one path: the `event=<name>` directories
become the `event` column (Hive partitioning); `event_name` holds the exact name.
Spark has no nanosecond timestamp type: with spark.sql.legacy.parquet.nanosAsLong
it reads `timestamp` (timestamp[ns] in the files) as its int64 nanoseconds since the
Epoch; `ts` below is that as a Spark timestamp (microseconds).
"""

import sys
import time

from pyspark.sql import SparkSession, functions as F


def main(path):
    spark = (SparkSession.builder.master("local[*]").appName("ust-parquet")
             .config("spark.sql.legacy.parquet.nanosAsLong", "true").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    t0 = time.perf_counter()
    df = spark.read.option("mergeSchema", "true").parquet(path)
    df = df.withColumn("ts", F.timestamp_micros(F.floor(F.col("timestamp") / 1000)))
    per_name = (df.groupBy("event_name")
                  .agg(F.count("*").alias("events"), F.min("ts").alias("first"),
                       F.max("ts").alias("last"))
                  .orderBy(F.desc("events")))
    per_name.show(truncate=False)
    if "vtid" in df.columns:
        df.groupBy("vpid", "vtid").count().orderBy(F.desc("count")).show(10)
    total = df.count()
    print(f"{total} events in {time.perf_counter() - t0:.1f} s")
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "parquet")
