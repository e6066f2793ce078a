"""AWS for fruitlake: an S3 bucket, IAM roles and an EMR cluster that runs `fruitlake run`, with a cost guard.

boto3 is imported only inside the functions that call AWS, so `fruitlake --help` never pays for it.
"""
